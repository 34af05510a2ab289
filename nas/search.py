"""``nas-search`` as a plain function: one worker of the stage-1 study.

``run_search(cfg)`` is what the Hydra CLI calls and what tests and notebooks call directly; ``cfg``
is the typed :class:`nas.config.NasSearchConfig` or a mapping of the keys to change from its
defaults (see :func:`effnas.config.as_config`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from effnas.allocator import in_use as allocator_in_use
from effnas.config import as_config
from effnas.evaluate import Evaluator, SearchExhausted
from effnas.io import remove_stale_temp, write_json
from effnas.objective import auto_target
from effnas.progress import ProgressReporter
from effnas.units import fmt_count
from effnas.results import best_trial, export_study
from effnas.protocol import data_identity, training_protocol
from effnas.runs import save_config, study_folder
from effnas.study import BudgetTaken, Interrupted, enqueue_once, handle_signals, open_study, run_worker, worker_id
from effnas.study.enqueue import sampler_stream
from effnas.supernet import SupernetConfig
from effnas.task import load_data
from search_space import ArchSpec, SearchSpace, resolve_arch

from .config import NasSearchConfig
from .rerank import RERANK_OF, enqueue_reranks, fmt_summary, rerank_seed, rerank_summary

__all__ = ["run_search", "SearchOutcome"]

log = logging.getLogger("effnas")


@dataclass
class SearchOutcome:
    folder: Path
    study_name: str
    best: dict[str, Any] | None
    counts: dict[str, int]
    interrupted: str | None = None


def _best_record(study: optuna.Study, meta: dict[str, Any], space: SearchSpace,
                 rerank: Any = None, evaluator: str = "proxy") -> dict[str, Any] | None:
    best = best_trial(study)
    if best is None:
        return None
    summary = rerank_summary(study, rerank.k, rerank.seeds) if rerank is not None else None
    if summary is not None and summary["complete"]:
        best = next(t for t in study.get_trials(deepcopy=False) if t.number == summary["winner"])
    spec = ArchSpec.from_string(best.user_attrs["arch"])
    a = best.user_attrs
    return {
        "arch": a["arch"], "spec": spec.to_dict(), "resolution": a.get("resolution", spec.resolution),
        "params": a["params"], "flops": a["flops"], "accuracy": a["accuracy"], "reward": a["reward"],
        "latency_ms": a.get("latency_ms"), "dataset": meta["dataset"], "num_classes": spec.num_classes,
        "in_channels": spec.in_channels, "T": meta["target"], "w": meta["alpha"] if meta["alpha"] ==
        meta["beta"] else None, "alpha": meta["alpha"], "beta": meta["beta"], "metric": meta["metric"],
        "study": study.study_name, "trial": best.number, "seed": a.get("seed"),
        "choices": dict(best.params), "space_size": space.size,
        "selected_by": "rerank" if summary is not None and summary["complete"] else evaluator,
        "rerank": None if summary is None else {
            **summary, "protocol": {"k": rerank.k, "seeds": rerank.seeds, "epochs": rerank.epochs,
                                    "train_size": rerank.train_size}},
    }


def run_search(cfg: NasSearchConfig | Any) -> SearchOutcome:
    """Run (or resume) one worker of a ``nas-search`` study. Raises ``ValueError`` on bad config."""
    cfg = as_config("nas_search", cfg)
    search, proxy, objective = cfg.search, cfg.proxy, cfg.objective
    seed = search.seed
    multi = search.multi_objective or type(cfg.sampler).multi_objective
    folder = study_folder(cfg.results_dir, search.study_name)  # the name is checked before any data
    data = load_data(cfg.dataset, proxy, seed)
    resolution = proxy.resolution
    space = cfg.space.build(num_classes=data.num_classes, in_channels=data.in_channels, resolution=resolution)
    target = objective.target
    if target == "auto":
        target = auto_target(objective.metric, data.num_classes, data.in_channels, resolution)
    reward = objective.reward(target)
    warm = [space.params_of(resolve_arch(name, what="search.warm_start").spec(data.num_classes, data.in_channels),
                            snap=True) for name in search.warm_start]
    study_name = search.study_name
    folder.mkdir(parents=True, exist_ok=True)
    storage = cfg.storage.build(folder, workers=cfg.workers)
    pruner = cfg.pruner.build(proxy.epochs)
    meta = {"kind": "nas-search", "dataset": data.name, "resolution": resolution, "target": reward.target,
            "alpha": reward.alpha, "beta": reward.beta, "metric": objective.metric, "multi_objective": multi,
            "space": space.base.to_string(), "space_size": space.size, "num_classes": data.num_classes,
            "in_channels": data.in_channels}
    protocol = {"data": {**data_identity(cfg.dataset, data), "split_seed": seed},
                "proxy": training_protocol(proxy, cfg.evaluator),
                "objective": {"metric": objective.metric, "T": reward.target, "alpha": reward.alpha,
                              "beta": reward.beta, "max_flops": objective.max_flops,
                              "max_params": objective.max_params, "multi_objective": multi},
                "space": {**cfg.space.protocol(), "base": space.base.to_string()}}
    study = open_study(study_name, storage, optuna.samplers.RandomSampler(), pruner,
                       ["maximize", "minimize"] if multi else ["maximize"], meta, protocol)
    # Accepted: from here on the run writes. Its sampler gets a stream of its own (never a replay).
    stream, sampler_seed = sampler_stream(study, folder, seed, worker_id())
    study.sampler = cfg.sampler.build(sampler_seed)
    save_config({**dataclasses.asdict(cfg), "sampler_stream": stream, "sampler_seed": sampler_seed}, folder)
    remove_stale_temp(folder)  # half-written files of writers that were killed
    log.info("nas-search: sampler stream %d (seed %d from search.seed=%d)", stream, sampler_seed, seed)
    enqueue_once(study, warm, folder)

    def arch_of(params: dict[str, Any]) -> str | None:
        try:
            return space.sample(optuna.trial.FixedTrial(params)).to_string()
        except (ValueError, KeyError):
            return None

    runner = Evaluator(data, proxy, reward, max_flops=objective.max_flops, max_params=objective.max_params,
                       seed=seed, multi_objective=multi, dedupe=True, arch_of=arch_of,
                       checkpoints=folder / "checkpoints")
    param_names = space.param_names()
    progress = ProgressReporter(search.n_trials)

    def export(study: optuna.Study, trial: optuna.trial.FrozenTrial | None = None) -> dict | None:
        export_study(study, folder, param_names)
        record = _best_record(study, meta, space, cfg.rerank, cfg.evaluator.name)
        if record is not None:
            write_json(record, folder / "best.json")
        if multi:
            front = [t for t in study.best_trials]
            write_json([{"trial": t.number, "accuracy": t.values[0], "flops": int(t.values[1]),
                         "arch": t.user_attrs.get("arch")} for t in front], folder / "pareto.json")
        return record

    def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        from effnas.results import throttled

        throttled(export, study, trial)  # at most every few seconds; the end of the run exports again
        progress(study, trial)

    log.info("nas-search: study %s in %s, storage %s; dataset %s (%d train / %d minival images at %d px), "
             "space of %.3g architectures, T=%s %s, budget %d trials; memory allocator %s", study_name, folder,
             cfg.storage.describe(folder), data.name, len(data.train), len(data.minival), resolution,
             space.size, fmt_count(reward.target), objective.metric, search.n_trials, allocator_in_use())

    def objective_fn(trial: optuna.Trial) -> Any:
        return runner.run(trial, space.sample(trial), resolution)

    interrupted = None
    with handle_signals():
        try:
            if isinstance(cfg.evaluator, SupernetConfig):  # trained (or loaded) before the first trial
                runner.trainer = _supernet(cfg, space, data)
                runner.prune = False  # one score per trial: nothing for a pruner to judge early
            run_worker(study, objective_fn, budget=search.n_trials, timeout=search.timeout,
                       max_retry=cfg.storage.max_retry, on_trial=on_trial)
        except Interrupted as exc:
            interrupted = exc.signame
        except SearchExhausted as exc:
            log.warning("nas-search: %s; this worker stops", exc)
        if interrupted is None and cfg.rerank.k > 0:
            try:
                _rerank(cfg, study, folder, space, reward, objective_fn, on_trial)
            except Interrupted as exc:
                interrupted = exc.signame
        best = export(study)  # inside the handler: a second Ctrl-C here cannot tear the files
    return SearchOutcome(folder, study_name, best, _counts(study), interrupted)


def _supernet(cfg: NasSearchConfig, space: SearchSpace, data: Any) -> Any:
    """The ``supernet`` evaluator: the study's supernet from its cache (trained there first by
    whichever worker comes first; the others wait and load it)."""
    from effnas.supernet.evaluate import supernet_evaluator
    from effnas.train import Diverged

    ev = cfg.evaluator
    cache = Path(ev.cache_dir) if ev.cache_dir else Path(cfg.results_dir) / "supernets"
    try:
        return supernet_evaluator(ev, cfg.dataset, cfg.proxy, space, data, cfg.search.seed, cache)
    except Diverged as exc:
        lr = ev.lr if ev.lr is not None else "null: the proxy's"
        raise ValueError(f"{exc}: lower evaluator.lr (now {lr})") from None


def _counts(study: optuna.Study) -> dict[str, int]:
    """Trials by state; trials not trained because their architecture already was, apart."""
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        key = "NOT TRAINED (DUPLICATE)" if t.user_attrs.get("duplicate_of") is not None else t.state.name
        counts[key] = counts.get(key, 0) + 1
    return counts


def _rerank(cfg: NasSearchConfig, study: optuna.Study, folder: Path, space: SearchSpace, reward: Any,
            search_objective: Any, on_trial: Any) -> None:
    """Re-train the top ``rerank.k`` at the ``rerank`` fidelity (see :mod:`nas.rerank`)."""
    rr = cfg.rerank
    added = enqueue_reranks(study, folder, rr.k, rr.seeds)
    pending = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
               if t.user_attrs.get(RERANK_OF) is not None]
    if not pending:
        return
    proxy = dataclasses.replace(cfg.proxy, epochs=rr.epochs, train_size=rr.train_size)
    data = load_data(cfg.dataset, proxy, cfg.search.seed)
    log.info("nas-search: re-evaluating the top %d (%d seeds each, %d epoch%s on %d images; %d enqueued now)",
             rr.k, rr.seeds, rr.epochs, "" if rr.epochs == 1 else "s", len(data.train), added)
    runner = Evaluator(data, proxy, reward, max_flops=None, max_params=None, seed=cfg.search.seed,
                       multi_objective=False, prune=False, checkpoints=folder / "checkpoints")

    def objective(trial: optuna.Trial) -> Any:
        attrs = trial.study._storage.get_trial_user_attrs(trial._trial_id)
        if attrs.get(RERANK_OF) is None:  # a retried or enqueued search trial: run it as one
            if not trial.study._storage.get_trial_system_attrs(trial._trial_id).get("fixed_params"):
                trial.set_user_attr("reason", "no re-evaluation left (another worker took the last one)")
                raise BudgetTaken("no re-evaluation left")
            return search_objective(trial)
        original = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == attrs[RERANK_OF])
        spec = space.sample(trial)
        runner.run(trial, spec, cfg.proxy.resolution, extra_attrs={RERANK_OF: original.number},
                   seed=rerank_seed(cfg.search.seed, original.number, attrs.get("rerank_seed", 0)))
        return original.value  # the sampler sees the proxy fidelity only

    run_worker(study, objective, budget=None, timeout=cfg.search.timeout, max_retry=cfg.storage.max_retry,
               on_trial=on_trial, only_enqueued=True)
    summary = rerank_summary(study, rr.k, rr.seeds)
    if summary is not None and summary["complete"]:
        log.info("nas-search: re-ranked: %s; winner #%d%s", fmt_summary(summary), summary["winner"],
                 " (the proxy's winner was lucky)" if summary["changed"] else " (as by proxy)")
