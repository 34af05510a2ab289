"""The grid points of a scale-search study: enqueued once, recognised in every trial (also retries
and duplicates), tabulated with the ``grid`` schema, and the best one chosen."""

from __future__ import annotations

import contextlib
import fcntl
import math
from pathlib import Path
from typing import Any, Iterator

import optuna
import pandas as pd
from optuna.trial import TrialState

from effnas.results import GRID

from .grid import KINDS, GridPoint, product_of

__all__ = ["point_key", "point_params", "enqueue_points", "earlier_twin", "untrained_duplicates", "kind_of",
           "grid_frame", "choose_best"]


def point_key(params: dict[str, Any] | None) -> tuple[float, float, float] | None:
    if not params or any(n not in params for n in ("alpha", "beta", "gamma")):
        return None
    return tuple(round(float(params[n]), 10) for n in ("alpha", "beta", "gamma"))  # type: ignore[return-value]


def point_params(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    return t.system_attrs.get("fixed_params") or t.params


@contextlib.contextmanager
def _enqueue_lock(folder: Path) -> Iterator[None]:
    """Serialise check-then-enqueue between local workers (``skip_if_exists`` is not atomic)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".enqueue.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def enqueue_points(study: optuna.Study, points: list[GridPoint], folder: Path,
                   user_attrs: dict[str, Any] | None = None) -> int:
    """Enqueue every point not already in the study; a point whose every trial FAILed (an
    interrupted run) is enqueued again. Returns how many were enqueued."""
    added = 0
    with _enqueue_lock(folder):
        states: dict[tuple, list[TrialState]] = {}
        for t in study.get_trials(deepcopy=False):
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
        if t.number >= number or t.state == TrialState.FAIL or t.user_attrs.get("duplicate_of") is not None:
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
            "duplicate_of": a.get("duplicate_of"), "retry_of": a.get("retry_of"), "worker": a.get("worker"),
            "arch": a.get("arch"), "datetime_start": start, "datetime_complete": end,
            "duration_seconds": (end - start).total_seconds() if start and end else None,
            "reason": a.get("reason"),
        })
    df = GRID.frame(rows)
    return df.sort_values("number", kind="stable").reset_index(drop=True)


def choose_best(study: optuna.Study, target: float = 2.0) -> optuna.trial.FrozenTrial | None:
    """The COMPLETE compound point with the highest accuracy; ties go to the smallest
    ``|product - target|``, then the smallest measured-ratio distance, then the smallest
    (alpha, beta, gamma)."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("accuracy") is not None and kind_of(study, t) == "compound"]
    if not done:
        return None

    def rank(t: optuna.trial.FrozenTrial) -> tuple:
        a, b, g = (t.params[n] for n in ("alpha", "beta", "gamma"))
        ratio = t.user_attrs.get("flops_ratio")
        return (-t.user_attrs["accuracy"], abs(product_of(a, b, g) - target),
                abs(ratio - target) if ratio is not None else math.inf, a, b, g, t.number)

    return min(done, key=rank)


