"""``scale-search`` as a plain function: the constrained alpha/beta/gamma grid at phi = 1.

Every grid point is one enqueued trial of a shared Optuna study (``enqueue_trial(...,
skip_if_exists=True)``), run by the stage-1 worker loop (``run_worker(only_enqueued=True)``) and
trained by stage 1's :class:`nas.search.TrialRunner` under the same proxy protocol, so several
workers -- Hydra multirun jobs or plain invocations -- share one grid and every point is evaluated
once. Two guards make "once" hold when workers start at the same moment: points are enqueued
under a lock file in the study folder, and a trial whose point an earlier live trial already holds
is closed untrained as FAIL with ``duplicate_of`` (a guard for storages shared across hosts).

``run_scale_search(cfg)`` is what the Hydra CLI calls and what tests and notebooks call directly;
``cfg`` is the Hydra tree as a plain dict (see ``conf/scale_search.yaml``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import optuna
import pandas as pd
import yaml
from optuna.trial import TrialState

from nas.objective import Reward
from nas.results import write_table, write_text
from nas.study import (BudgetTaken, Interrupted, StorageConfig, handle_signals, make_storage, open_study,
                       run_worker, trial_counts)
from search_space import count_flops

from .base import BaseSource, read_base
from .grid import KINDS, GridPoint, GridSpec, constrained_grid, match_flops, measure_point, product_of

__all__ = ["run_scale_search", "ScaleSearchOutcome", "GRID_COLUMNS", "grid_frame", "choose_best",
           "DataCache"]

log = logging.getLogger("effnas")

_MULTIPLIER_HIGH = 100.0  # the range suggest_float records; enqueued values are used as they are
_BUDGET_KEYS = ("epochs", "train_size", "minival_size", "batch_size", "optimizer", "lr", "schedule",
                "bn_recalibrate_batches")

# Columns of grid.{parquet,csv}, in order.
GRID_COLUMNS: dict[str, str] = {
    "number": "int64",
    "state": "string",
    "kind": "string",
    "alpha": "float64",
    "beta": "float64",
    "gamma": "float64",
    "product": "float64",
    "flops_ratio": "float64",
    "resolution": "Int64",
    "params": "Int64",
    "flops": "Int64",
    "accuracy": "float64",
    "train_seconds": "float64",
    "epochs": "Int64",
    "seed": "Int64",
    "matched_to": "Int64",
    "duplicate_of": "Int64",
    "retry_of": "Int64",
    "worker": "string",
    "arch": "string",
    "datetime_start": "datetime64[us]",
    "datetime_complete": "datetime64[us]",
    "duration_seconds": "float64",
    "reason": "string",
}


@dataclass
class ScaleSearchOutcome:
    folder: Path
    study_name: str
    points: int  # grid points of this run (1 for a single swept point)
    best: dict[str, Any] | None  # the coefficients.yaml record
    counts: dict[str, int] = field(default_factory=dict)
    interrupted: str | None = None
    skipped: str | None = None  # a swept point outside the constraint: nothing was run
    table: pd.DataFrame | None = None


class DataCache:
    """The proxy data at every resolution a point needs, loaded once per resolution."""

    def __init__(self, dataset: dict[str, Any], proxy: dict[str, Any], seed: int) -> None:
        self.dataset, self.proxy, self.seed = dataset, proxy, seed
        self._splits: dict[int, Any] = {}

    def at(self, resolution: int) -> Any:
        if resolution not in self._splits:
            from nas.search import load_data

            self._splits[resolution] = load_data(self.dataset, {**self.proxy, "resolution": resolution},
                                                 self.seed)
        return self._splits[resolution]


def _key(params: dict[str, Any] | None) -> tuple[float, float, float] | None:
    if not params or any(n not in params for n in ("alpha", "beta", "gamma")):
        return None
    return tuple(round(float(params[n]), 10) for n in ("alpha", "beta", "gamma"))  # type: ignore[return-value]


def _point_params(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
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
            states.setdefault(_key(_point_params(t)), []).append(t.state)
        for point in points:
            seen = states.get(_key(point.params_dict()))
            attrs = {"kind": point.kind, **(user_attrs or {})}
            if seen and all(s == TrialState.FAIL for s in seen):
                study.enqueue_trial(point.params_dict(), user_attrs=attrs)
                added += 1
            elif not seen:
                study.enqueue_trial(point.params_dict(), user_attrs=attrs, skip_if_exists=True)
                added += 1
    return added


def _earlier_twin(study: optuna.Study, number: int, key: tuple) -> int | None:
    """An earlier, live trial of the same point (so this one would evaluate it a second time)."""
    for t in study.get_trials(deepcopy=False):
        if t.number >= number or t.state == TrialState.FAIL or t.user_attrs.get("duplicate_of") is not None:
            continue
        if _key(_point_params(t)) == key:
            return t.number
    return None


def _kind_of(study: optuna.Study, trial: optuna.trial.FrozenTrial | optuna.Trial) -> str:
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
        p = _point_params(t)
        if _key(p) is None:  # a trial that found no point left (two workers raced for the last)
            continue
        alpha, beta, gamma = (p.get(n) for n in ("alpha", "beta", "gamma"))
        start, end = t.datetime_start, t.datetime_complete
        rows.append({
            "number": t.number, "state": t.state.name, "kind": _kind_of(study, t),
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
    df = pd.DataFrame(rows, columns=list(GRID_COLUMNS))
    for col, dtype in GRID_COLUMNS.items():
        df[col] = df[col].astype(dtype)
    return df.sort_values("number", kind="stable").reset_index(drop=True)


def choose_best(study: optuna.Study, target: float = 2.0) -> optuna.trial.FrozenTrial | None:
    """The COMPLETE compound point with the highest accuracy; ties go to the smallest
    ``|product - target|``, then the smallest measured-ratio distance, then the smallest
    (alpha, beta, gamma)."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("accuracy") is not None and _kind_of(study, t) == "compound"]
    if not done:
        return None

    def rank(t: optuna.trial.FrozenTrial) -> tuple:
        a, b, g = (t.params[n] for n in ("alpha", "beta", "gamma"))
        ratio = t.user_attrs.get("flops_ratio")
        return (-t.user_attrs["accuracy"], abs(product_of(a, b, g) - target),
                abs(ratio - target) if ratio is not None else math.inf, a, b, g, t.number)

    return min(done, key=rank)


@dataclass(frozen=True)
class _Settings:
    grid: GridSpec
    point: tuple[float, float, float] | None
    baselines: bool
    seed: int
    timeout: float | None
    storage: StorageConfig
    base: BaseSource
    base_resolution: int


def _sweep_point(cfg: dict[str, Any]) -> tuple[float, float, float] | None:
    given = {n: cfg.get(n) for n in ("alpha", "beta", "gamma")}
    if all(v is None for v in given.values()):
        return None
    missing = [n for n, v in given.items() if v is None]
    if missing:
        set_ = ", ".join(f"{n}={v}" for n, v in given.items() if v is not None)
        raise ValueError(f"a single point needs alpha, beta and gamma; got {set_} without "
                         f"{', '.join(missing)} (or set none of them to search the grid)")
    for name, value in given.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a number >= 1, got {value!r}")
        if value < 1:
            raise ValueError(f"{name}={value} is below 1: scaling multipliers must be >= 1")
    return tuple(round(float(given[n]), 10) for n in ("alpha", "beta", "gamma"))  # type: ignore[return-value]


def _settings(cfg: dict[str, Any]) -> _Settings:
    """Everything that can be checked without data or storage."""
    grid = GridSpec.from_config(cfg.get("grid"))
    point = _sweep_point(cfg)
    baselines = cfg.get("baselines", False)
    if not isinstance(baselines, bool):
        raise ValueError(f"baselines must be true or false, got {baselines!r}")
    search = dict(cfg.get("search") or {})
    seed = search.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"search.seed must be an integer >= 0, got {seed!r}")
    timeout = search.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise ValueError(f"search.timeout must be a positive number of seconds or null, got {timeout!r}")
    storage = StorageConfig(**{k: v for k, v in (cfg.get("storage") or {}).items() if k != "name"})
    base = read_base(cfg.get("base"))
    proxy = dict(cfg.get("proxy") or {})
    resolution = cfg.get("base_resolution")
    if resolution is None:
        resolution = base.file_resolution or proxy.get("resolution", 32)
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 32:
        raise ValueError(f"base_resolution must be an integer >= 32 (five stride-2 stages), got {resolution!r}")
    return _Settings(grid, point, baselines, seed, timeout, storage, base, resolution)


def _skip_message(point: tuple[float, float, float], figure: float, grid: GridSpec) -> str:
    name = "alpha·beta²·gamma²" if grid.mode == "product" else "measured FLOPs ratio"
    return (f"scale-search: skipping {_fmt_point(*point)}: {name} {figure:.4f} is outside "
            f"{grid.target:g} ± {grid.tol:g} (grid.tol, grid.mode={grid.mode}); nothing run")


def _fmt_point(a: float, b: float, g: float) -> str:
    return f"alpha={a:g} beta={b:g} gamma={g:g}"


def _coefficients_record(study: optuna.Study, best: optuna.trial.FrozenTrial, meta: dict[str, Any],
                         settings: _Settings) -> dict[str, Any]:
    a = best.user_attrs
    alpha, beta, gamma = (float(best.params[n]) for n in ("alpha", "beta", "gamma"))
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    baselines = {}
    for t in complete:
        kind = _kind_of(study, t)
        if kind != "compound" and t.user_attrs.get("matched_to") == best.number:
            baselines[kind] = {"alpha": t.params["alpha"], "beta": t.params["beta"], "gamma": t.params["gamma"],
                               "flops_ratio": t.user_attrs.get("flops_ratio"),
                               "accuracy": t.user_attrs.get("accuracy"), "trial": t.number}
    record = {
        "alpha": alpha, "beta": beta, "gamma": gamma,
        "product": round(product_of(alpha, beta, gamma), 10),
        "flops_ratio": a.get("flops_ratio"),
        "base_resolution": meta["base_resolution"],
        "resolution": a.get("resolution"),
        "accuracy": a.get("accuracy"),
        "params": a.get("params"), "flops": a.get("flops"),
        "base": meta["base"],
        "base_source": settings.base.describe(),
        "dataset": meta["dataset"], "num_classes": meta["num_classes"], "in_channels": meta["in_channels"],
        "budget": meta["budget"],
        "seed": settings.seed,
        "time": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "study": study.study_name, "trial": best.number,
        "points_evaluated": len({_key(t.params) for t in complete if _kind_of(study, t) == "compound"}),
        "points_in_study": len({_key(_point_params(t)) for t in study.get_trials(deepcopy=False)
                                if _kind_of(study, t) == "compound"} - {None}),
        "grid": settings.grid.to_dict(),
        "tie_break": "highest accuracy, then smallest |product - target|, then smallest measured-ratio "
                     "distance, then smallest (alpha, beta, gamma)",
    }
    if baselines:
        record["baselines"] = baselines
    return record


def run_scale_search(cfg: dict[str, Any]) -> ScaleSearchOutcome:
    """Run (or resume) one worker of a ``scale-search`` study. Raises ``ValueError`` on bad input
    before anything is written."""
    settings = _settings(cfg)
    # torch comes with nas.search: imported after the cheap checks, so bad input fails fast
    from nas.search import TrialRunner, save_config, study_folder, train_config

    grid, point = settings.grid, settings.point
    proxy = dict(cfg.get("proxy") or {})
    dataset = dict(cfg.get("dataset") or {})
    train_cfg = train_config(proxy, settings.seed)
    r0 = settings.base_resolution
    if point is None and grid.mode == "product":
        constrained_grid(grid)  # an empty grid fails here, before the data is loaded
    study_name = (cfg.get("search") or {}).get("study_name")
    if point is not None and grid.mode == "product" and not grid.accepts(product_of(*point)):
        name = study_name or "scale-" + str(dataset.get("name"))
        return ScaleSearchOutcome(study_folder(cfg, name), name, 0, None,
                                  skipped=_skip_message(point, product_of(*point), grid))
    cache = DataCache(dataset, proxy, settings.seed)
    data0 = cache.at(r0)
    base = settings.base.spec(data0.num_classes, data0.in_channels,
                              what=f"dataset {data0.name}").replace(resolution=r0)
    base_flops = count_flops(base, r0)
    study_name = study_name or f"scale-{data0.name}"
    folder = study_folder(cfg, study_name)

    if point is not None:
        p, _ = measure_point(base, r0, *point, base_flops=base_flops)
        figure = p.product if grid.mode == "product" else p.flops_ratio
        if not grid.accepts(figure):
            return ScaleSearchOutcome(folder, study_name, 0, None, skipped=_skip_message(point, figure, grid))
        points = [p]
    else:
        points = constrained_grid(grid, base, r0)
    log.info("scale-search: %d grid point%s (grid.mode=%s, |figure - %g| <= %g) from %s at %d px, "
             "base %.2fM FLOPs", len(points), "" if len(points) == 1 else "s", grid.mode, grid.target,
             grid.tol, settings.base.describe(), r0, base_flops / 1e6)
    print(f"scale-search: grid of {len(points)} point{'' if len(points) == 1 else 's'} to evaluate "
          f"(study {study_name})", flush=True)

    folder.mkdir(parents=True, exist_ok=True)
    save_config(cfg, folder)
    storage = make_storage(settings.storage, folder, workers=int(cfg.get("workers", 1) or 1))
    protocol = {**proxy, **train_cfg.to_dict()}
    budget = {k: protocol.get(k) for k in _BUDGET_KEYS}
    meta = {"kind": "scale-search", "dataset": data0.name, "num_classes": data0.num_classes,
            "in_channels": data0.in_channels, "base": base.to_string(), "base_resolution": r0,
            "budget": budget, "seed": settings.seed}
    study = open_study(study_name, storage, optuna.samplers.RandomSampler(seed=settings.seed),
                       optuna.pruners.NopPruner(), ["maximize"], meta)
    enqueue_points(study, points, folder)

    reward = Reward(float(base_flops), 0.0, 0.0, "flops")  # w = 0: the value is the accuracy
    runners: dict[int, TrialRunner] = {}

    def runner_at(resolution: int) -> TrialRunner:
        if resolution not in runners:
            runners[resolution] = TrialRunner(cache.at(resolution), train_cfg, reward, max_flops=None,
                                              max_params=None, seed=settings.seed, prune=False)
        return runners[resolution]

    def objective(trial: optuna.Trial) -> float:
        # the point: enqueued (fixed params), or a retry of a dead worker's trial (params copied)
        point_params = _point_params(trial.study._storage.get_trial(trial._trial_id))
        if _key(point_params) is None:  # another worker popped the last point first
            trial.set_user_attr("reason", "no grid point left to evaluate (another worker took the last one)")
            raise BudgetTaken("no enqueued grid point left")
        a, b, g = (trial.suggest_float(n, 1.0, max(_MULTIPLIER_HIGH, float(point_params[n])))
                   for n in ("alpha", "beta", "gamma"))
        twin = _earlier_twin(trial.study, trial.number, _key({"alpha": a, "beta": b, "gamma": g}))
        if twin is not None:  # enqueued twice (workers on hosts without a common lock)
            trial.set_user_attr("duplicate_of", twin)
            trial.set_user_attr("reason", f"duplicate of trial {twin}: not evaluated again")
            raise BudgetTaken(f"its point is already trial {twin}")
        kind = _kind_of(trial.study, trial)
        p, spec = measure_point(base, r0, a, b, g, kind=kind, base_flops=base_flops)
        extra = {"kind": kind, "alpha": a, "beta": b, "gamma": g, "product": p.product,
                 "flops_ratio": p.flops_ratio, "base_flops": base_flops}
        return runner_at(p.resolution).run(trial, spec, p.resolution, extra_attrs=extra, seed=settings.seed)

    started = time.monotonic()

    def export(study: optuna.Study) -> dict[str, Any] | None:
        table = grid_frame(study)
        write_table(table, folder, "grid")
        best = choose_best(study, grid.target)
        if best is None:
            return None
        record = _coefficients_record(study, best, meta, settings)
        write_text(yaml.safe_dump(record, sort_keys=False, allow_unicode=True), folder / "coefficients.yaml")
        return record

    def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        export(study)
        _report(study, trial, started, grid.target)

    export(study)
    interrupted = None
    with handle_signals():
        try:
            run_worker(study, objective, budget=None, timeout=settings.timeout,
                       max_retry=settings.storage.max_retry, on_trial=on_trial, only_enqueued=True)
            if settings.baselines:
                best = choose_best(study, grid.target)
                if best is None:
                    log.warning("baselines=true but no compound point completed: no baselines run")
                else:
                    target_flops = best.user_attrs["flops"]
                    singles = [match_flops(base, r0, kind, target_flops)[0] for kind in KINDS[1:]]
                    log.info("baselines at the FLOPs of trial %d (%s, x%.2f): %s", best.number,
                             _fmt_point(*(best.params[n] for n in ("alpha", "beta", "gamma"))),
                             best.user_attrs["flops_ratio"],
                             ", ".join(f"{s.kind} x{s.flops_ratio:.2f}" for s in singles))
                    enqueue_points(study, singles, folder, {"matched_to": best.number})
                    run_worker(study, objective, budget=None, timeout=settings.timeout,
                               max_retry=settings.storage.max_retry, on_trial=on_trial, only_enqueued=True)
        except Interrupted as exc:
            interrupted = exc.signame
    record = export(study)
    counts = {s.name: n for s, n in trial_counts(study).items() if n}
    return ScaleSearchOutcome(folder, study_name, len(points), record, counts, interrupted,
                              table=grid_frame(study))


def _report(study: optuna.Study, trial: optuna.trial.FrozenTrial, started: float, target: float) -> None:
    """One line per finished trial: progress over distinct points, the point, its accuracy."""
    trials = study.get_trials(deepcopy=False)
    planned = {_key(_point_params(t)) for t in trials} - {None}
    done = {_key(_point_params(t)) for t in trials
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and t.user_attrs.get("duplicate_of") is None}
    a = trial.user_attrs
    params = _point_params(trial)
    where = _fmt_point(*(params[n] for n in ("alpha", "beta", "gamma"))) if _key(params) else "?"
    if trial.state == TrialState.COMPLETE:
        what = (f"acc {a['accuracy']:.4f}, product {a['product']:.3f}, FLOPs x{a['flops_ratio']:.2f} "
                f"({a['resolution']} px, {a['flops'] / 1e6:.2f}M FLOPs) in {a.get('train_seconds', 0):.1f}s")
    else:
        what = a.get("reason", "")
    best = choose_best(study, target)
    best_txt = ""
    if best is not None:
        best_txt = (f" | best {_fmt_point(*(best.params[n] for n in ('alpha', 'beta', 'gamma')))} "
                    f"acc {best.user_attrs['accuracy']:.4f}")
    log.info("[%d/%d] trial %d %s %s %s: %s%s (%.0fs elapsed)", len(done), len(planned), trial.number,
             _kind_of(study, trial), where, trial.state.name, what, best_txt, time.monotonic() - started)
