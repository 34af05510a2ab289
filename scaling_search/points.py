"""The grid points of a scale-search study: enqueued once, recognised in every trial (also retries
and duplicates), tabulated with the ``grid`` schema, the top networks re-evaluated at a higher
fidelity, and the best one chosen."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from effnas.io import locked
from effnas.rerank import RERANK_OF, RERANK_SEED
from effnas.results import GRID

from .grid import KINDS, GridPoint, product_of

__all__ = ["point_key", "point_params", "enqueue_points", "earlier_twin", "untrained_duplicates", "kind_of",
           "grid_frame", "choose_best", "is_rerank", "rerank_candidates", "enqueue_reranks", "rerank_summary"]


def point_key(params: dict[str, Any] | None) -> tuple[float, float, float] | None:
    if not params or any(n not in params for n in ("alpha", "beta", "gamma")):
        return None
    return tuple(round(float(params[n]), 10) for n in ("alpha", "beta", "gamma"))  # type: ignore[return-value]


def point_params(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    return t.system_attrs.get("fixed_params") or t.params


def is_rerank(t: optuna.trial.FrozenTrial) -> bool:
    """A re-evaluation of a point's network (not a grid point of its own)."""
    return t.user_attrs.get(RERANK_OF) is not None


def enqueue_points(study: optuna.Study, points: list[GridPoint], folder: Path,
                   user_attrs: dict[str, Any] | None = None) -> int:
    """Enqueue every point not already in the study; a point whose every trial FAILed (an
    interrupted run) is enqueued again. Returns how many were enqueued."""
    added = 0
    with locked(folder / ".enqueue.lock"):  # check-then-enqueue between local workers
        states: dict[tuple, list[TrialState]] = {}
        for t in study.get_trials(deepcopy=False):
            if is_rerank(t):
                continue
            states.setdefault(point_key(point_params(t)), []).append(t.state)
        for point in points:
            seen = states.get(point_key(point.params_dict()))
            attrs = {"kind": point.kind, **{k: v for k, v in (("flops_ratio", point.flops_ratio),
                                                               ("product", point.product),
                                                               ("resolution", point.resolution),
                                                               ("flops", point.flops), ("params", point.params))
                                             if v is not None}, **(user_attrs or {})}
            if seen and all(s == TrialState.FAIL for s in seen):
                study.enqueue_trial(point.params_dict(), user_attrs=attrs)
                added += 1
            elif not seen:
                study.enqueue_trial(point.params_dict(), user_attrs=attrs, skip_if_exists=True)
                added += 1
    return added


def earlier_twin(study: optuna.Study, number: int, key: tuple) -> int | None:
    """An earlier, live trial of the same point (so this one would evaluate it a second time)."""
    for t in study.get_trials(deepcopy=False):
        if (t.number >= number or t.state == TrialState.FAIL or t.user_attrs.get("duplicate_of") is not None
                or is_rerank(t)):
            continue
        if point_key(point_params(t)) == key:
            return t.number
    return None


def untrained_duplicates(study: optuna.Study, points: list[GridPoint]) -> list[GridPoint]:
    """The points whose every trial was closed untrained as the duplicate of a trial that was still
    running (FAIL with ``duplicate_of``: another worker was training the same network) and whose
    twin has finished since (COMPLETE or PRUNED): enqueued again, each takes its twin's result."""
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    by_point: dict[tuple | None, list[optuna.trial.FrozenTrial]] = {}
    for t in trials:
        if not is_rerank(t):
            by_point.setdefault(point_key(point_params(t)), []).append(t)

    def waited_for_a_finished_twin(t: optuna.trial.FrozenTrial) -> bool:
        twin = by_number.get(t.user_attrs.get("duplicate_of", -1))
        return (t.state == TrialState.FAIL and twin is not None
                and twin.state in (TrialState.COMPLETE, TrialState.PRUNED))

    return [point for point in points
            if (seen := by_point.get(point_key(point.params_dict())))
            and all(waited_for_a_finished_twin(t) for t in seen)]


def kind_of(study: optuna.Study, trial: optuna.trial.FrozenTrial | optuna.Trial) -> str:
    """A trial's kind; a retry of a dead worker's trial inherits it from the original."""
    attrs = trial.user_attrs
    by_number = None
    while attrs.get("kind") is None and attrs.get("retry_of") is not None:
        by_number = by_number or {t.number: t for t in study.get_trials(deepcopy=False)}
        original = by_number.get(attrs["retry_of"])
        if original is None:
            break
        attrs = original.user_attrs
    kind = attrs.get("kind", "compound")
    return kind if kind in KINDS else "compound"


def grid_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial of a grid point (every state) with :data:`GRID_COLUMNS`."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        p = point_params(t)
        if point_key(p) is None:  # a trial that found no point left (two workers raced for the last)
            continue
        alpha, beta, gamma = (p.get(n) for n in ("alpha", "beta", "gamma"))
        start, end = t.datetime_start, t.datetime_complete
        rows.append({
            "number": t.number, "state": t.state.name, "kind": kind_of(study, t),
            "alpha": alpha, "beta": beta, "gamma": gamma,
            "product": product_of(alpha, beta, gamma) if None not in (alpha, beta, gamma) else None,
            "flops_ratio": a.get("flops_ratio"), "resolution": a.get("resolution"), "params": a.get("params"),
            "flops": a.get("flops"), "accuracy": a.get("accuracy"), "train_seconds": a.get("train_seconds"),
            "epochs": a.get("epochs"), "seed": a.get("seed"), "matched_to": a.get("matched_to"),
            "duplicate_of": a.get("duplicate_of"), "retry_of": a.get("retry_of"),
            "rerank_of": a.get(RERANK_OF), "rerank_seed": a.get(RERANK_SEED), "worker": a.get("worker"),
            "arch": a.get("arch"), "datetime_start": start, "datetime_complete": end,
            "duration_seconds": (end - start).total_seconds() if start and end else None,
            "reason": a.get("reason"),
        })
    df = GRID.frame(rows)
    return df.sort_values("number", kind="stable").reset_index(drop=True)


def _compound_points(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("accuracy") is not None and not is_rerank(t) and kind_of(study, t) == "compound"]


def choose_best(study: optuna.Study, target: float = 2.0,
                rerank: dict[str, Any] | None = None) -> optuna.trial.FrozenTrial | None:
    """The COMPLETE compound point with the highest accuracy; ties go to the smallest
    ``|product - target|``, then the smallest measured-ratio distance, then the smallest
    (alpha, beta, gamma). With a complete re-ranking (:func:`rerank_summary`) the accuracy is the
    mean of the re-evaluations, among the points of the re-evaluated networks only."""
    done = _compound_points(study)
    if rerank is not None and rerank["complete"]:
        means = {row["arch"]: row["accuracy_mean"] for row in rerank["candidates"]}
        done = [t for t in done if t.user_attrs.get("arch") in means]
    else:
        means = None
    if not done:
        return None

    def rank(t: optuna.trial.FrozenTrial) -> tuple:
        a, b, g = (t.params[n] for n in ("alpha", "beta", "gamma"))
        ratio = t.user_attrs.get("flops_ratio")
        accuracy = t.user_attrs["accuracy"] if means is None else means[t.user_attrs["arch"]]
        return (-accuracy, abs(product_of(a, b, g) - target),
                abs(ratio - target) if ratio is not None else math.inf, a, b, g, t.number)

    return min(done, key=rank)


def rerank_candidates(study: optuna.Study, k: int) -> list[optuna.trial.FrozenTrial]:
    """The ``k`` distinct networks of the compound points with the highest proxy accuracy, each by
    the trial that trained it (points that round to one network share it; ties: lower number)."""
    trained = sorted((t for t in _compound_points(study) if t.user_attrs.get("duplicate_of") is None),
                     key=lambda t: (-t.user_attrs["accuracy"], t.number))
    top: dict[str, optuna.trial.FrozenTrial] = {}
    for t in trained:
        if len(top) == k:
            break
        top.setdefault(t.user_attrs.get("arch") or str(t.number), t)
    return list(top.values())


def enqueue_reranks(study: optuna.Study, folder: Path, k: int, seeds: int) -> int:
    """Enqueue each candidate's re-evaluations not yet in the study (another worker's count as
    there unless they FAILed); under the study folder's enqueue lock. Returns how many."""
    if k <= 0:
        return 0
    top = rerank_candidates(study, k)
    added = 0
    with locked(folder / ".enqueue.lock"):
        have = {(t.user_attrs.get(RERANK_OF), t.user_attrs.get(RERANK_SEED)) for t in study.get_trials(deepcopy=False)
                if is_rerank(t) and t.state != TrialState.FAIL}
        for t in top:
            for s in range(seeds):
                if (t.number, s) not in have:
                    study.enqueue_trial(point_params(t), user_attrs={"kind": "compound", RERANK_OF: t.number,
                                                                    RERANK_SEED: s})
                    added += 1
    return added


def rerank_summary(study: optuna.Study, k: int, seeds: int) -> dict[str, Any] | None:
    """Per candidate network: its point, proxy accuracy and the re-evaluations' accuracies (mean,
    sd); ``complete`` once every candidate has ``seeds`` of them. None when re-ranking is off."""
    if k <= 0:
        return None
    top = rerank_candidates(study, k)
    runs: dict[int, dict[int, float]] = {}  # original -> seed -> accuracy (one run a seed)
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if is_rerank(t) and t.user_attrs.get("accuracy") is not None:
            runs.setdefault(t.user_attrs[RERANK_OF], {}).setdefault(t.user_attrs.get(RERANK_SEED, 0), t.user_attrs["accuracy"])
    rows = []
    for t in top:
        accs = [acc for _, acc in sorted(runs.get(t.number, {}).items())]
        rows.append({"trial": t.number, "arch": t.user_attrs.get("arch"),
                     **{n: float(point_params(t)[n]) for n in ("alpha", "beta", "gamma")},
                     "proxy_accuracy": t.user_attrs["accuracy"], "seeds_done": len(accs), "accuracies": accs,
                     "accuracy_mean": statistics.fmean(accs) if accs else None,
                     "accuracy_sd": statistics.stdev(accs) if len(accs) > 1 else None})
    complete = bool(rows) and all(row["seeds_done"] >= seeds for row in rows)
    return {"complete": complete, "candidates": rows, "proxy_winner": top[0].number if top else None}


