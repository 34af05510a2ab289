"""``nas-search`` as a plain function: the stage-1 study from a config dict.

``run_search(cfg)`` is what the Hydra CLI calls and what tests and notebooks call directly. The
config is the Hydra tree as a plain dict (see ``conf/nas_search.yaml`` for every key).
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from search_space import ArchSpec, SearchSpace, count_flops, count_params, reference_spec

from .data import DataSplits, load_splits
from .objective import Reward, auto_target, cost_of
from .results import best_trial, export_study, redact_url, write_json, write_text
from .study import (PRUNERS, Interrupted, StorageConfig, enqueue_once, handle_signals, make_pruner, make_sampler,
                    make_storage, open_study, run_worker, trial_counts, worker_id)
from .train import Diverged, TrainConfig, train_and_evaluate

__all__ = ["run_search", "SearchOutcome", "train_config", "load_data", "TrialRunner",
           "save_config", "study_folder", "ProgressReporter"]

log = logging.getLogger("effnas")


@dataclass
class SearchOutcome:
    folder: Path
    study_name: str
    best: dict[str, Any] | None
    counts: dict[str, int]
    interrupted: str | None = None


def _get(cfg: dict, dotted: str, default: Any = None) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def train_config(proxy: dict[str, Any], seed: int) -> TrainConfig:
    """TrainConfig from the ``proxy`` group (data-only keys are ignored)."""
    names = {f.name for f in fields(TrainConfig)}
    data_keys = {"train_size", "minival_size", "resolution", "val_size"}
    unknown = set(proxy) - names - data_keys
    if unknown:
        raise ValueError(f"unknown proxy option(s) {sorted(unknown)}; valid: {sorted(names | data_keys)}")
    return TrainConfig(**{k: v for k, v in proxy.items() if k in names and k != "seed"}, seed=seed)


def load_data(dataset: dict[str, Any], proxy: dict[str, Any], seed: int) -> DataSplits:
    name = dataset.get("name")
    resolution = proxy.get("resolution", 32)
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 32:
        raise ValueError(f"proxy.resolution must be an integer >= 32 (five stride-2 stages), got {resolution!r}")
    extra = {k: v for k, v in dataset.items() if k not in ("name", "root", "download", "flip") and v is not None}
    return load_splits(name, dataset.get("root"), resolution=resolution,
                       minival_size=proxy.get("minival_size", 5000), train_size=proxy.get("train_size"),
                       seed=seed, download=bool(dataset.get("download", False)), **extra)


def study_folder(cfg: dict[str, Any], study_name: str) -> Path:
    return Path(cfg.get("results_dir") or "results").expanduser().resolve() / study_name


def _redact(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: (redact_url(v) if k == "url" and isinstance(v, str) else _redact(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_redact(v) for v in node]
    return node


def save_config(cfg: dict[str, Any], folder: Path) -> Path:
    """Save the resolved config (passwords redacted): ``config.yaml`` once (the study's first run)
    and ``configs/<time>_<host>_<pid>.yaml`` for every worker run, so nothing is overwritten."""
    text = yaml.safe_dump(_redact(cfg), sort_keys=False)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_file = folder / "configs" / f"{stamp}_{worker_id().replace(':', '_')}.yaml"
    write_text(text, run_file)
    first = folder / "config.yaml"
    if not first.exists():
        write_text(text, first)
    return run_file


def _fmt_count(n: float | None) -> str:
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class ProgressReporter:
    """One line per finished trial: i/N, state, reward, best so far, ETA."""

    def __init__(self, budget: int | None, started: float | None = None) -> None:
        self.budget = budget
        self.started = started or time.monotonic()
        self.mine: list[float] = []

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        counts = trial_counts(study)
        done = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
        if trial.duration is not None:
            self.mine.append(trial.duration.total_seconds())
        best = best_trial(study)
        eta = ""
        if self.budget and self.mine:
            workers = max(1, counts[TrialState.RUNNING] + 1)
            remaining = max(0, self.budget - done)
            eta = f" | ETA {_fmt_seconds(remaining * (sum(self.mine) / len(self.mine)) / workers)}"
        a = trial.user_attrs
        what = (f"reward {a['reward']:.4f} acc {a['accuracy']:.4f}" if trial.state == TrialState.COMPLETE
                and a.get("reward") is not None else f"{a.get('reason', '')}")
        best_txt = (f" | best #{best.number} reward {best.user_attrs['reward']:.4f} "
                    f"acc {best.user_attrs['accuracy']:.4f}" if best else "")
        total = f"/{self.budget}" if self.budget else ""
        log.info("[%d%s] trial %d %s: %s, flops %s, params %s (%.1fs)%s%s", done, total, trial.number,
                 trial.state.name, what, _fmt_count(a.get("flops")), _fmt_count(a.get("params")),
                 trial.duration.total_seconds() if trial.duration else 0.0, best_txt, eta)


class TrialRunner:
    """Prices, trains and scores one candidate spec inside an Optuna trial (shared by stage 2)."""

    def __init__(self, data: DataSplits, train: TrainConfig, reward: Reward, *, max_flops: float | None,
                 max_params: float | None, seed: int, multi_objective: bool = False,
                 prune: bool = True, latency_kw: dict | None = None) -> None:
        self.data, self.train, self.reward = data, train, reward
        self.max_flops, self.max_params = max_flops, max_params
        self.seed = seed
        self.multi_objective, self.prune = multi_objective, prune
        self.latency_kw = latency_kw or {}

    def run(self, trial: optuna.Trial, spec: ArchSpec, resolution: int | None = None,
            extra_attrs: dict[str, Any] | None = None, seed: int | None = None) -> Any:
        """``seed``: the training seed; default ``self.seed + trial.number`` (stage 2 passes one
        seed for every grid point, so that points differ only by their network)."""
        # The worker id and the global-budget check are run_worker's (nas.study), before this runs.
        res = resolution or spec.resolution
        seed = self.seed + trial.number if seed is None else seed
        flops, params = count_flops(spec, res), count_params(spec)
        for key, value in {"arch": spec.to_string(), "flops": flops, "params": params, "seed": seed,
                           "resolution": res, **(extra_attrs or {})}.items():
            trial.set_user_attr(key, value)
        limits = [("max_flops", flops, self.max_flops), ("max_params", params, self.max_params)]
        for name, value, limit in limits:
            if limit is not None and value > limit:
                reason = f"{name}: {_fmt_count(value)} > limit {_fmt_count(limit)} (not trained)"
                trial.set_user_attr("reason", reason)
                trial.set_user_attr("epochs", 0)
                raise optuna.TrialPruned(reason)
        cost = float(flops) if self.reward.metric == "flops" else float(params) \
            if self.reward.metric == "params" else cost_of(spec, "latency", res, **self.latency_kw)
        if self.reward.metric == "latency":
            trial.set_user_attr("latency_ms", cost)
        cfg = TrainConfig(**{**self.train.to_dict(), "seed": seed})

        def on_epoch(epoch: int, accuracy: float) -> None:
            trial.set_user_attr("epochs", epoch)
            trial.set_user_attr("accuracy", accuracy)
            if self.multi_objective or not self.prune:
                return
            # Report what the study maximises (the reward at this epoch's accuracy), so that a cheap
            # network is not pruned for an accuracy its cost makes up for; and never prune after
            # the last epoch: the training is done, stopping it saves nothing.
            value = self.reward(accuracy, cost)
            trial.report(value, epoch)
            if epoch < cfg.epochs and trial.should_prune():
                reason = (f"pruned by {type(trial.study.pruner).__name__} at epoch {epoch} "
                          f"(reward {value:.4f}, acc {accuracy:.4f})")
                trial.set_user_attr("reason", reason)
                raise optuna.TrialPruned(reason)

        try:
            result = train_and_evaluate(spec.replace(resolution=res) if res != spec.resolution else spec,
                                        self.data, cfg, on_epoch,
                                        progress=lambda m: log.debug("trial %d %s", trial.number, m))
        except Diverged as exc:
            trial.set_user_attr("reason", f"diverged: {exc}")
            raise optuna.TrialPruned(f"diverged: {exc}") from None
        except Interrupted as exc:
            trial.set_user_attr("reason", f"interrupted by {exc.signame}")
            raise
        reward = self.reward(result.accuracy, cost)
        for key, value in {"accuracy": result.accuracy, "reward": reward, "epochs": result.epochs_done,
                           "train_seconds": result.train_seconds}.items():
            trial.set_user_attr(key, value)
        if self.multi_objective:
            return result.accuracy, float(flops)
        return reward


def _best_record(study: optuna.Study, meta: dict[str, Any], space: SearchSpace) -> dict[str, Any] | None:
    best = best_trial(study)
    if best is None:
        return None
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
    }


def run_search(cfg: dict[str, Any]) -> SearchOutcome:
    """Run (or resume) one worker of a ``nas-search`` study. Raises ``ValueError`` on bad config."""
    search = dict(cfg.get("search") or {})
    proxy = dict(cfg.get("proxy") or {})
    dataset = dict(cfg.get("dataset") or {})
    objective_cfg = dict(cfg.get("objective") or {})
    n_trials = search.get("n_trials", 40)
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials <= 0:
        raise ValueError(f"search.n_trials must be a positive integer (a global budget), got {n_trials!r}")
    timeout = search.get("timeout")
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
        raise ValueError(f"search.timeout must be a positive number of seconds or null, got {timeout!r}")
    seed = int(search.get("seed", 0))
    worker = int(cfg.get("worker", 0) or 0)
    sampler_cfg = dict(cfg.get("sampler") or {"name": "tpe"})
    pruner_cfg = dict(cfg.get("pruner") or {"name": "median"})
    sampler_name, pruner_name = sampler_cfg.pop("name", "tpe"), pruner_cfg.pop("name", "median")
    multi = bool(search.get("multi_objective", False)) or sampler_name == "nsgaii"
    if sampler_name not in ("tpe", "random", "nsgaii"):
        raise ValueError(f"sampler must be one of tpe, random, nsgaii, got {sampler_name!r}")
    if pruner_name not in PRUNERS:
        raise ValueError(f"pruner must be one of {', '.join(PRUNERS)}, got {pruner_name!r}")
    storage_cfg = StorageConfig(**{k: v for k, v in (cfg.get("storage") or {}).items() if k != "name"})
    train_cfg = train_config(proxy, seed)
    resolution = proxy.get("resolution", 32)
    metric = objective_cfg.get("metric", "flops")
    target = objective_cfg.get("target", "auto")
    # Validate the cheap things before touching data or storage.
    if target != "auto" and (isinstance(target, bool) or not isinstance(target, (int, float)) or target <= 0):
        raise ValueError(f"objective.target must be a positive number or 'auto', got {target!r}")
    data = load_data(dataset, proxy, seed)
    space = SearchSpace.from_config(dict(cfg.get("space") or {}), num_classes=data.num_classes,
                                    in_channels=data.in_channels, resolution=resolution)
    if target == "auto":
        target = auto_target(metric, data.num_classes, data.in_channels, resolution)
    w = objective_cfg.get("w", -0.07)
    alpha = objective_cfg.get("alpha")
    beta = objective_cfg.get("beta")
    reward = Reward(float(target), w if alpha is None else alpha, w if beta is None else beta, metric)
    study_name = search.get("study_name") or f"nas-{data.name}"
    folder = study_folder(cfg, study_name)
    folder.mkdir(parents=True, exist_ok=True)
    save_config(cfg, folder)
    storage = make_storage(storage_cfg, folder, workers=int(cfg.get("workers", 1) or 1))
    sampler = make_sampler(sampler_name, seed + worker, **sampler_cfg)
    pruner = make_pruner(pruner_name, train_cfg.epochs, **pruner_cfg)
    meta = {"kind": "nas-search", "dataset": data.name, "resolution": resolution, "target": reward.target,
            "alpha": reward.alpha, "beta": reward.beta, "metric": metric, "multi_objective": multi,
            "space": space.base.to_string(), "space_size": space.size, "num_classes": data.num_classes,
            "in_channels": data.in_channels}
    study = open_study(study_name, storage, sampler, pruner,
                       ["maximize", "minimize"] if multi else ["maximize"], meta)
    enqueue_once(study, [space.params_of(reference_spec(name, num_classes=data.num_classes,
                                                        in_channels=data.in_channels), snap=True)
                         for name in search.get("warm_start") or []], folder)
    runner = TrialRunner(data, train_cfg, reward, max_flops=objective_cfg.get("max_flops"),
                         max_params=objective_cfg.get("max_params"), seed=seed,
                         multi_objective=multi)
    param_names = space.param_names()
    progress = ProgressReporter(n_trials)

    def export(study: optuna.Study, trial: optuna.trial.FrozenTrial | None = None) -> dict | None:
        export_study(study, folder, param_names)
        record = _best_record(study, meta, space)
        if record is not None:
            write_json(record, folder / "best.json")
        if multi:
            front = [t for t in study.best_trials]
            write_json([{"trial": t.number, "accuracy": t.values[0], "flops": int(t.values[1]),
                         "arch": t.user_attrs.get("arch")} for t in front], folder / "pareto.json")
        return record

    def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        export(study, trial)
        progress(study, trial)

    log.info("nas-search: study %s in %s, storage %s; dataset %s (%d train / %d minival images at %d px), "
             "space of %.3g architectures, T=%s %s, budget %d trials", study_name, folder,
             storage_cfg.describe(folder), data.name, len(data.train), len(data.minival), resolution,
             space.size, _fmt_count(reward.target), metric, n_trials)

    def objective(trial: optuna.Trial) -> Any:
        return runner.run(trial, space.sample(trial), resolution)

    interrupted = None
    with handle_signals():
        try:
            run_worker(study, objective, budget=n_trials, timeout=timeout, max_retry=storage_cfg.max_retry,
                       on_trial=on_trial)
        except Interrupted as exc:
            interrupted = exc.signame
        best = export(study)  # inside the handler: a second Ctrl-C here cannot tear the files
    counts = {s.name: n for s, n in trial_counts(study).items() if n}
    return SearchOutcome(folder, study_name, best, counts, interrupted)
