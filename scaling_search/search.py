"""``scale-search`` as a plain function: the constrained alpha/beta/gamma grid at phi = 1.

Every grid point is one enqueued trial of a shared Optuna study (``enqueue_trial(...,
skip_if_exists=True)``), run by the stage-1 worker loop (``run_worker(only_enqueued=True)``) and
trained by stage 1's :class:`effnas.evaluate.Evaluator` under the same proxy protocol, so several
workers -- Hydra multirun jobs or plain invocations -- share one grid and every point is evaluated
once. Two guards make "once" hold when workers start at the same moment: points are enqueued
under a lock file in the study folder, and a trial whose point an earlier live trial already holds
is closed untrained as FAIL with ``duplicate_of`` (a guard for storages shared across hosts).
Points that round to one network train it once: the others take its result (``duplicate_of``);
one whose network another worker is still training is closed as FAIL and, once that training
is in, enqueued again to take its result -- so every point has one, however the workers raced.

``run_scale_search(cfg)`` is what the Hydra CLI calls and what tests and notebooks call directly;
``cfg`` is the Hydra tree as a plain dict (see ``conf/scale_search.yaml``).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import yaml
from optuna.trial import TrialState

from effnas.allocator import in_use as allocator_in_use
from effnas.config import as_config
from effnas.evaluate import Evaluator
from effnas.io import remove_stale_temp, write_table, write_text
from effnas.objective import Reward
from effnas.protocol import data_identity, training_protocol
from effnas.rerank import RERANK_OF, RERANK_SEED, rerank_seed
from effnas.results import GRID
from effnas.runs import save_config, study_folder
from effnas.study import BudgetTaken, Interrupted, handle_signals, open_study, run_worker, trial_counts
from effnas.task import DataCache
from effnas.units import fmt_seconds
from search_space import ArchSpec, ResolvedArch, count_flops, resolve_arch

from .config import ScaleSearchConfig
from .grid import KINDS, GridPoint, GridSpec, constrained_grid, match_flops, measure_point, product_of, scaled_spec
from .points import (choose_best, earlier_twin, enqueue_points, enqueue_reranks, grid_frame, kind_of, point_key,
                     point_params, rerank_summary, untrained_duplicates)

__all__ = ["run_scale_search", "ScaleSearchOutcome", "GRID_COLUMNS"]

GRID_COLUMNS = GRID.columns

log = logging.getLogger("effnas")

_MULTIPLIER_HIGH = 100.0  # the range suggest_float records; enqueued values are used as they are
_BUDGET_KEYS = ("epochs", "train_size", "minival_size", "batch_size", "optimizer", "lr", "schedule",
                "bn_recalibrate_batches")

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


@dataclass(frozen=True)
class _Settings:
    grid: GridSpec
    point: tuple[float, float, float] | None
    seed: int
    base: ResolvedArch
    base_resolution: int


def _settings(cfg: ScaleSearchConfig) -> _Settings:
    """Everything that can be checked without data or storage."""
    point = None
    if cfg.alpha is not None:  # the schema checked that all three are set
        point = tuple(round(float(v), 10) for v in (cfg.alpha, cfg.beta, cfg.gamma))
    base = resolve_arch(cfg.base, what="base")
    grid = cfg.grid.spec()
    resolution = cfg.base_resolution
    if resolution is None:
        resolution = max(base.resolution or cfg.proxy.resolution, cfg.min_base_resolution)
        if grid.mode == "measured_flops" and point is None:
            resolution = _expressive_resolution(base.spec(), grid, resolution)
    return _Settings(grid, point, cfg.search.seed, base, resolution)  # type: ignore[arg-type]


_MIN_GAMMAS = 3


def _expressive_resolution(spec: ArchSpec, grid: GridSpec, start: int) -> int:
    """The smallest resolution from ``start`` (in steps of 8 px, up to 4x) at which the grid of
    equal real costs holds at least three resolution steps (gamma values): on tiny feature maps one
    more pixel changes a whole map size, so small resolutions leave only gamma = 1."""
    for r in range(start, 4 * start + 1, 8):
        try:
            points = constrained_grid(grid, spec.replace(resolution=r), r)
        except ValueError:
            continue
        if len({p.gamma for p in points}) >= _MIN_GAMMAS:
            if r != start:
                log.info("scale-search: base resolution %d px (from %d): the first with %d+ gamma steps at "
                         "equal real costs", r, start, _MIN_GAMMAS)
            return r
    return start


def _skip_message(point: tuple[float, float, float], figure: float, grid: GridSpec) -> str:
    name = "alpha·beta²·gamma²" if grid.mode == "product" else "measured FLOPs ratio"
    return (f"scale-search: skipping {_fmt_point(*point)}: {name} {figure:.4f} is outside "
            f"{grid.target:g} ± {grid.tol:g} (grid.tol, grid.mode={grid.mode}); nothing run")


def _fmt_point(a: float, b: float, g: float) -> str:
    return f"alpha={a:g} beta={b:g} gamma={g:g}"


def _fmt_rerank(summary: dict[str, Any]) -> str:
    parts = []
    for row in summary["candidates"]:
        mean, sd = row["accuracy_mean"], row["accuracy_sd"]
        parts.append(f"#{row['trial']} {_fmt_point(row['alpha'], row['beta'], row['gamma'])} proxy "
                     f"{row['proxy_accuracy']:.4f} -> {'-' if mean is None else f'{mean:.4f}'}"
                     f"{'' if sd is None else f' ± {sd:.4f}'} ({row['seeds_done']} seeds)")
    return "; ".join(parts)


def _coefficients_record(study: optuna.Study, best: optuna.trial.FrozenTrial, meta: dict[str, Any],
                         settings: _Settings, summary: dict[str, Any] | None = None,
                         rerank: Any = None) -> dict[str, Any]:
    a = best.user_attrs
    alpha, beta, gamma = (float(best.params[n]) for n in ("alpha", "beta", "gamma"))
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    baselines = {}
    for t in complete:
        kind = kind_of(study, t)
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
        # when the chosen point's trial finished: the record is the study's alone, so that exporting
        # it again (every trial, a resumed or finished study) leaves the file as it was
        "time": best.datetime_complete.astimezone().isoformat(timespec="seconds"),
        "study": study.study_name, "trial": best.number,
        "points_evaluated": len({point_key(t.params) for t in complete if kind_of(study, t) == "compound"}),
        "points_in_study": len({point_key(point_params(t)) for t in study.get_trials(deepcopy=False)
                                if kind_of(study, t) == "compound"} - {None}),
        "grid": settings.grid.to_dict(),
        "rule": (f"highest minival accuracy among the grid points whose "
                 f"{'real (rounded) FLOPs ratio to the base' if settings.grid.mode == 'measured_flops' else 'alpha·beta²·gamma²'}"
                 f" is within {settings.grid.target:g} ± {settings.grid.tol:g} (grid.mode={settings.grid.mode})"),
        "flops_ratio_range": _ratio_range(study),
        "tie_break": "highest accuracy, then smallest |product - target|, then smallest measured-ratio "
                     "distance, then smallest (alpha, beta, gamma)",
    }
    reranked = summary is not None and summary["complete"]
    if reranked:
        row = next(r for r in summary["candidates"] if r["arch"] == a.get("arch"))
        by_proxy = choose_best(study, settings.grid.target)
        record["accuracy_reranked"] = row["accuracy_mean"]
        record["rule"] += (f"; the top {rerank.k} networks by it re-trained with {rerank.seeds} seeds, "
                           f"{rerank.epochs} epoch{'' if rerank.epochs == 1 else 's'} on {rerank.train_size or 'all'} "
                           f"images: the best mean wins")
    record["selected_by"] = "rerank" if reranked else "proxy"
    if summary is not None:
        record["rerank"] = {"protocol": {"k": rerank.k, "seeds": rerank.seeds, "epochs": rerank.epochs,
                                         "train_size": rerank.train_size},
                            "complete": summary["complete"], "candidates": summary["candidates"],
                            "proxy_choice": by_proxy.number if reranked else None}
    if baselines:
        record["baselines"] = baselines
    return record


def _ratio_range(study: optuna.Study) -> list[float] | None:
    ratios = [t.user_attrs["flops_ratio"] for t in study.get_trials(deepcopy=False)
              if t.user_attrs.get("flops_ratio") is not None and kind_of(study, t) == "compound"]
    return [round(min(ratios), 4), round(max(ratios), 4)] if ratios else None


def run_scale_search(cfg: ScaleSearchConfig | Any) -> ScaleSearchOutcome:
    """Run (or resume) one worker of a ``scale-search`` study. Raises ``ValueError`` on bad input
    before anything is written."""
    cfg = as_config("scale_search", cfg)
    settings = _settings(cfg)
    grid, point = settings.grid, settings.point
    proxy = cfg.proxy
    r0 = settings.base_resolution
    if point is None and grid.mode == "product":
        constrained_grid(grid)  # an empty grid fails here, before the data is loaded
    study_name = cfg.search.study_name
    folder = study_folder(cfg.results_dir, study_name)
    if point is not None and grid.mode == "product" and not grid.accepts(product_of(*point)):
        return ScaleSearchOutcome(folder, study_name, 0, None, skipped=_skip_message(point, product_of(*point), grid))
    cache = DataCache(cfg.dataset, proxy, settings.seed)
    data0 = cache.at(r0)
    base = settings.base.spec_for(data0.num_classes, data0.in_channels,
                                  what=f"dataset {data0.name}").replace(resolution=r0)
    base_flops = count_flops(base, r0)

    if point is not None:
        p, _ = measure_point(base, r0, *point, base_flops=base_flops)
        figure = p.product if grid.mode == "product" else p.flops_ratio
        if not grid.accepts(figure):
            return ScaleSearchOutcome(folder, study_name, 0, None, skipped=_skip_message(point, figure, grid))
        points = [p]
    else:
        points = constrained_grid(grid, base, r0)
    log.info("scale-search: %d grid point%s (grid.mode=%s, |figure - %g| <= %g) from %s at %d px, "
             "base %.2fM FLOPs; memory allocator %s", len(points), "" if len(points) == 1 else "s", grid.mode,
             grid.target, grid.tol, settings.base.describe(), r0, base_flops / 1e6, allocator_in_use())
    ratios = [p.flops_ratio for p in points if p.flops_ratio is not None]
    spread = f"; real FLOPs ratios to the base {min(ratios):.3f}-{max(ratios):.3f} (max/min {max(ratios) / min(ratios):.3f})" \
        if ratios else ""
    # Rounding (ceil of repeats, filters to multiples of 8, whole pixels) maps nearby points to one
    # network: each is trained once, the others take its result (duplicate_of).
    networks = len({(scaled_spec(base, width=p.beta, depth=p.alpha).to_string(), p.resolution) for p in points})
    print(f"scale-search: grid of {len(points)} point{'' if len(points) == 1 else 's'} to evaluate at {r0} px "
          f"(study {study_name}), {networks} distinct network{'' if networks == 1 else 's'} after rounding"
          f"{spread}", flush=True)

    folder.mkdir(parents=True, exist_ok=True)
    storage = cfg.storage.build(folder, workers=cfg.workers)
    trained = training_protocol(proxy)
    budget = {k: trained.get(k) for k in _BUDGET_KEYS}
    meta = {"kind": "scale-search", "dataset": data0.name, "num_classes": data0.num_classes,
            "in_channels": data0.in_channels, "base": base.to_string(), "base_resolution": r0,
            "budget": budget, "seed": settings.seed}
    protocol = {"data": {**data_identity(cfg.dataset, data0), "split_seed": settings.seed},
                "proxy": trained, "base": base.to_string(), "base_resolution": r0}
    study = open_study(study_name, storage, optuna.samplers.RandomSampler(seed=settings.seed),
                       optuna.pruners.NopPruner(), ["maximize"], meta, protocol)
    save_config(dataclasses.asdict(cfg), folder)  # accepted: the run writes from here on
    remove_stale_temp(folder)
    enqueue_points(study, points, folder)

    reward = Reward(float(base_flops), 0.0, 0.0, "flops")  # w = 0: the value is the accuracy
    runners: dict[int, Evaluator] = {}

    def runner_at(resolution: int) -> Evaluator:
        if resolution not in runners:
            runner = Evaluator(cache.at(resolution), proxy, reward, max_flops=None, max_params=None,
                               seed=settings.seed, prune=False, dedupe=True, checkpoints=folder / "checkpoints")
            runner.max_duplicates_in_a_row = len(points) + 1  # a fixed list of points, not a sampler
            runners[resolution] = runner
        return runners[resolution]

    rr = cfg.rerank
    rr_proxy = dataclasses.replace(proxy, epochs=rr.epochs, train_size=rr.train_size)
    rr_runners: dict[int, Evaluator] = {}

    def rerank_runner_at(resolution: int) -> Evaluator:
        if resolution not in rr_runners:  # no dedupe: it trains a network the study has, on purpose
            rr_data = DataCache(cfg.dataset, rr_proxy, settings.seed).at(resolution)
            rr_runners[resolution] = Evaluator(rr_data, rr_proxy, reward, max_flops=None, max_params=None,
                                               seed=settings.seed, prune=False, checkpoints=folder / "checkpoints")
        return rr_runners[resolution]

    def objective(trial: optuna.Trial) -> float:
        # the point: enqueued (fixed params), or a retry of a dead worker's trial (params copied)
        frozen = trial.study._storage.get_trial(trial._trial_id)
        fixed = point_params(frozen)
        if point_key(fixed) is None:  # another worker popped the last point first
            trial.set_user_attr("reason", "no grid point left to evaluate (another worker took the last one)")
            raise BudgetTaken("no enqueued grid point left")
        a, b, g = (trial.suggest_float(n, 1.0, max(_MULTIPLIER_HIGH, float(fixed[n])))
                   for n in ("alpha", "beta", "gamma"))
        if frozen.user_attrs.get(RERANK_OF) is not None:  # a re-evaluation of a top network
            original, s = frozen.user_attrs[RERANK_OF], frozen.user_attrs.get(RERANK_SEED, 0)
            p, spec = measure_point(base, r0, a, b, g, kind="compound", base_flops=base_flops)
            extra = {"kind": "compound", "alpha": a, "beta": b, "gamma": g, "product": p.product,
                     "flops_ratio": p.flops_ratio, "base_flops": base_flops, RERANK_OF: original, RERANK_SEED: s}
            return rerank_runner_at(p.resolution).run(trial, spec, p.resolution, extra_attrs=extra,
                                                      seed=rerank_seed(settings.seed, original, s))
        twin = earlier_twin(trial.study, trial.number, point_key({"alpha": a, "beta": b, "gamma": g}))
        if twin is not None:  # enqueued twice (workers on hosts without a common lock)
            trial.set_user_attr("duplicate_of", twin)
            trial.set_user_attr("reason", f"duplicate of trial {twin}: not evaluated again")
            raise BudgetTaken(f"its point is already trial {twin}")
        kind = kind_of(trial.study, trial)
        p, spec = measure_point(base, r0, a, b, g, kind=kind, base_flops=base_flops)
        extra = {"kind": kind, "alpha": a, "beta": b, "gamma": g, "product": p.product,
                 "flops_ratio": p.flops_ratio, "base_flops": base_flops}
        return runner_at(p.resolution).run(trial, spec, p.resolution, extra_attrs=extra, seed=settings.seed)

    started = time.monotonic()

    reranking = rr.k > 0 and point is None  # a swept point's job alone cannot know the others' results

    def ranking(study: optuna.Study) -> dict[str, Any] | None:
        return rerank_summary(study, rr.k, rr.seeds) if reranking else None

    def export(study: optuna.Study, summary: dict[str, Any] | None = None) -> dict[str, Any] | None:
        table = grid_frame(study)
        write_table(table, folder, GRID.stem)
        summary = summary or ranking(study)
        best = choose_best(study, grid.target, summary)
        if best is None:
            return None
        record = _coefficients_record(study, best, meta, settings, summary, rr)
        text, path = yaml.safe_dump(record, sort_keys=False, allow_unicode=True), folder / "coefficients.yaml"
        if not path.is_file() or path.read_text() != text:  # unchanged: left alone, its mtime too
            write_text(text, path)
        return record

    def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        summary = ranking(study)  # once a trial: the export and the progress line share it
        export(study, summary)
        _report(study, trial, started, grid.target, summary)

    export(study)
    interrupted = None
    enqueued: list[tuple[list[GridPoint], dict[str, Any] | None]] = [(points, None)]

    def take_finished_twins() -> None:
        """A point closed untrained because another worker was still training its network takes
        that network's result once it is in (the last worker to finish does this; a resume too)."""
        again = [(twins, attrs) for pts, attrs in enqueued if (twins := untrained_duplicates(study, pts))]
        if sum(enqueue_points(study, twins, folder, attrs) for twins, attrs in again):
            run_worker(study, objective, budget=None, timeout=cfg.search.timeout,
                       max_retry=cfg.storage.max_retry, on_trial=on_trial, only_enqueued=True)

    def rerank() -> None:
        """The top ``rerank.k`` networks by proxy accuracy, re-trained at the ``rerank`` fidelity with
        ``rerank.seeds`` seeds (trials of the study: enqueued once, shared by the workers, resumable).
        A worker whose grid is done while another still trains a point starts on the top networks
        so far rather than idle; should that last point make the top k, the worker finishing it
        enqueues its re-evaluations (a network pushed out keeps runs that the choice ignores)."""
        added = enqueue_reranks(study, folder, rr.k, rr.seeds)
        if added:
            log.info("scale-search: re-evaluating the top %d networks (%d seeds each, %d epoch%s on %s images; "
                     "%d enqueued now)", rr.k, rr.seeds, rr.epochs, "" if rr.epochs == 1 else "s",
                     rr.train_size or "all", added)
        run_worker(study, objective, budget=None, timeout=cfg.search.timeout,
                   max_retry=cfg.storage.max_retry, on_trial=on_trial, only_enqueued=True)
        summary = ranking(study)
        if summary is not None and summary["complete"]:
            best, by_proxy = choose_best(study, grid.target, summary), choose_best(study, grid.target)
            changed = best.user_attrs.get("arch") != by_proxy.user_attrs.get("arch")
            print(f"scale-search: re-ranked: {_fmt_rerank(summary)}; chosen "
                  f"{_fmt_point(*(best.params[n] for n in ('alpha', 'beta', 'gamma')))}"
                  + (f" (by proxy accuracy alone: {_fmt_point(*(by_proxy.params[n] for n in ('alpha', 'beta', 'gamma')))}"
                     f", trial {by_proxy.number})" if changed else " (as by proxy accuracy)"), flush=True)

    with handle_signals():
        try:
            run_worker(study, objective, budget=None, timeout=cfg.search.timeout,
                       max_retry=cfg.storage.max_retry, on_trial=on_trial, only_enqueued=True)
            if reranking:
                take_finished_twins()  # every point has its result before the top networks are picked
                rerank()
            if cfg.baselines:
                best = choose_best(study, grid.target, ranking(study))
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
                    enqueued.append((singles, {"matched_to": best.number}))
                    run_worker(study, objective, budget=None, timeout=cfg.search.timeout,
                               max_retry=cfg.storage.max_retry, on_trial=on_trial, only_enqueued=True)
            take_finished_twins()
        except Interrupted as exc:
            interrupted = exc.signame
    record = export(study)
    counts = {s.name: n for s, n in trial_counts(study).items() if n}
    return ScaleSearchOutcome(folder, study_name, len(points), record, counts, interrupted,
                              table=grid_frame(study))


def _report(study: optuna.Study, trial: optuna.trial.FrozenTrial, started: float, target: float,
            summary: dict[str, Any] | None = None) -> None:
    """One line per finished trial: progress over distinct points, the point, its accuracy."""
    trials = study.get_trials(deepcopy=False)
    planned = {point_key(point_params(t)) for t in trials} - {None}
    done = {point_key(point_params(t)) for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    a = trial.user_attrs
    params = point_params(trial)
    where = _fmt_point(*(params[n] for n in ("alpha", "beta", "gamma"))) if point_key(params) else "?"
    if trial.state == TrialState.COMPLETE:
        what = (f"acc {a['accuracy']:.4f}, product {a['product']:.3f}, FLOPs x{a['flops_ratio']:.2f} "
                f"({a['resolution']} px, {a['flops'] / 1e6:.2f}M FLOPs) in {a.get('train_seconds', 0):.1f}s")
        if a.get("duplicate_of") is not None:
            what += f" (the network of trial {a['duplicate_of']} after rounding: its result, not trained again)"
        if a.get(RERANK_OF) is not None:
            what = f"re-evaluation {a.get(RERANK_SEED, 0) + 1} of trial {a[RERANK_OF]}: {what}"
    else:
        what = a.get("reason", "")
    best = choose_best(study, target, summary)
    best_txt = ""
    if best is not None:
        reranked = summary is not None and summary["complete"]
        acc = (next(r["accuracy_mean"] for r in summary["candidates"] if r["arch"] == best.user_attrs.get("arch"))
               if reranked else best.user_attrs["accuracy"])
        best_txt = (f" | best {_fmt_point(*(best.params[n] for n in ('alpha', 'beta', 'gamma')))} "
                    f"acc {acc:.4f}{' (re-ranked mean)' if reranked else ''}")
    elapsed = time.monotonic() - started
    log.info("[%d/%d] trial %d %s %s %s: %s%s (%s elapsed%s)", len(done), len(planned), trial.number,
             kind_of(study, trial), where, trial.state.name, what, best_txt, fmt_seconds(elapsed),
             _eta(trials, elapsed))


def _eta(trials: list[optuna.trial.FrozenTrial], elapsed: float) -> str:
    """', ETA ...' for the enqueued trials not finished yet (points, re-evaluations), at the pace
    of the trials finished since this process started (every worker's: they share the queue)."""
    since = datetime.datetime.now() - datetime.timedelta(seconds=elapsed)
    finished = sum(1 for t in trials if t.datetime_complete is not None and t.datetime_complete >= since)
    left = sum(1 for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING))
    return f", ETA {fmt_seconds(elapsed / finished * left)}" if finished and left else ""
