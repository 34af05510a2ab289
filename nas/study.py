"""Studies, storages, samplers and pruners, and the worker loop that shares one study.

One process = one worker running ``study.optimize`` against the shared storage; N workers come
from Hydra multirun or N plain invocations. Optuna's own objects do the work:

* storage: a journal file (default, safe for many local processes), SQLite (one process only),
  or PostgreSQL through ``RDBStorage`` with heartbeats and ``RetryHeartbeatStaleTrialCallback``;
* sampler: TPE (seeded, per worker), random, NSGA-II; pruner: median, hyperband, none.

The trial budget is global across workers: a worker starts a new trial only while
``COMPLETE + PRUNED + RUNNING < budget``; a trial that finds itself beyond the budget (two workers
raced for the last slot) is failed as ``surplus`` and is not counted. Trials left RUNNING by a dead
worker are failed and re-enqueued: by heartbeat with PostgreSQL, and -- the journal file has no
heartbeat -- by checking that the recorded ``host:pid`` of the worker is gone on this host.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import optuna
from optuna.trial import TrialState

from .results import redact_url

__all__ = ["Interrupted", "StorageConfig", "make_storage", "make_sampler", "make_pruner", "SAMPLERS",
           "PRUNERS", "STORAGES", "worker_id", "recover_dead_local_workers", "handle_signals",
           "run_worker", "trial_counts", "open_study"]

log = logging.getLogger("effnas")

SAMPLERS = ("tpe", "random", "nsgaii", "grid")
PRUNERS = ("median", "hyperband", "threshold", "none")
STORAGES = ("journal", "sqlite", "postgres")


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread on SIGINT / SIGTERM; optuna fails the running trial and re-raises."""

    def __init__(self, signame: str) -> None:
        super().__init__(signame)
        self.signame = signame

    @property
    def exit_code(self) -> int:
        return 128 + (signal.SIGTERM if self.signame == "SIGTERM" else signal.SIGINT)


@contextmanager
def handle_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM (what SLURM sends before preemption) into :class:`Interrupted`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_interrupt(signum: int, frame: Any) -> None:
        raise Interrupted(signal.Signals(signum).name)

    previous = {s: signal.signal(s, raise_interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class StorageConfig:
    kind: str = "journal"
    url: str | None = None  # sqlite / postgres URL; journal: path of the file (default in the study folder)
    heartbeat_interval: int = 10
    grace_period: int | None = None  # default: 2 x heartbeat_interval
    max_retry: int = 2
    lock: str = "symlink"  # journal lock: symlink (local) or open (NFS)

    def __post_init__(self) -> None:
        if self.kind not in STORAGES:
            raise ValueError(f"storage must be one of {', '.join(STORAGES)}, got {self.kind!r}")
        if self.kind == "postgres" and not self.url:
            raise ValueError("storage=postgres needs storage.url (or the EFFNAS_STORAGE_URL environment "
                             "variable), e.g. postgresql://user:password@host:5432/db")
        if self.kind == "postgres" and not str(self.url).startswith(("postgresql", "postgres")):
            raise ValueError(f"storage=postgres needs a postgresql:// URL, got {redact_url(self.url)!r}")
        if self.heartbeat_interval < 1:
            raise ValueError(f"storage.heartbeat_interval must be >= 1 s, got {self.heartbeat_interval!r}")
        if self.grace_period is not None and self.grace_period <= self.heartbeat_interval:
            raise ValueError(f"storage.grace_period ({self.grace_period}) must exceed heartbeat_interval "
                             f"({self.heartbeat_interval})")
        if self.max_retry < 0:
            raise ValueError(f"storage.max_retry must be >= 0, got {self.max_retry!r}")
        if self.lock not in ("symlink", "open"):
            raise ValueError(f"storage.lock must be symlink or open, got {self.lock!r}")

    def describe(self, folder: Path) -> str:
        if self.kind == "journal":
            return f"journal file {self.journal_path(folder)}"
        return f"{self.kind} {redact_url(self.url)}"

    def journal_path(self, folder: Path) -> Path:
        return Path(self.url) if self.url else folder / "study.journal"


def make_storage(cfg: StorageConfig, folder: Path, workers: int = 1) -> optuna.storages.BaseStorage:
    """The Optuna storage of a study folder."""
    if cfg.kind == "journal":
        path = cfg.journal_path(folder)
        path.parent.mkdir(parents=True, exist_ok=True)
        journal = optuna.storages.journal
        lock = (journal.JournalFileOpenLock(str(path)) if cfg.lock == "open"
                else journal.JournalFileSymlinkLock(str(path)))
        return optuna.storages.JournalStorage(journal.JournalFileBackend(str(path), lock_obj=lock))
    if cfg.kind == "sqlite":
        url = cfg.url or f"sqlite:///{folder / 'study.db'}"
        if workers > 1:
            log.warning("SQLite is for one process only: %d workers sharing it will hit 'database is "
                        "locked' and orphan RUNNING trials; use storage=journal or storage=postgres", workers)
        if not url.startswith("sqlite:///"):
            raise ValueError(f"storage=sqlite needs a sqlite:/// URL, got {url!r}")
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            cfg.url,
            engine_kwargs={"pool_pre_ping": True},
            heartbeat_interval=cfg.heartbeat_interval,
            grace_period=cfg.grace_period or 2 * cfg.heartbeat_interval,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(cfg.max_retry),
        )


def make_sampler(name: str, seed: int | None, **options: Any) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, **options)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "nsgaii":
            return optuna.samplers.NSGAIISampler(seed=seed, **options)
    raise ValueError(f"sampler must be one of tpe, random, nsgaii, got {name!r}")


def make_pruner(name: str, max_epochs: int, **options: Any) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(**{"n_startup_trials": 3, "n_warmup_steps": 0, **options})
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(**{"min_resource": 1, "max_resource": max(1, max_epochs),
                                                 **options})
    if name == "threshold":  # prune any trial whose minival accuracy is below `lower` at any epoch
        return optuna.pruners.ThresholdPruner(**{"lower": 0.2, **options})
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"pruner must be one of {', '.join(PRUNERS)}, got {name!r}")


def open_study(name: str, storage: optuna.storages.BaseStorage, sampler: optuna.samplers.BaseSampler,
               pruner: optuna.pruners.BasePruner, directions: list[str], metadata: dict[str, Any]) -> optuna.Study:
    """Create or resume a study; a resumed study must have been made with the same ``metadata``
    (dataset, objective, space...) -- results of different problems never mix."""
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                directions=directions, load_if_exists=True)
    existing = study.user_attrs
    for key, value in metadata.items():
        if key in existing and existing[key] != value:
            raise ValueError(f"study {name!r} was created with {key}={existing[key]!r}, this run has "
                             f"{key}={value!r}; use another search.study_name or the same settings")
    for key, value in metadata.items():
        if key not in existing:
            study.set_user_attr(key, value)
    return study


def trial_counts(study: optuna.Study) -> dict[TrialState, int]:
    counts = {s: 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        counts[t.state] += 1
    return counts


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _retry_count(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> int:
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    count, current = 0, trial
    while current is not None and current.user_attrs.get("retry_of") is not None:
        count += 1
        current = trials.get(current.user_attrs["retry_of"])
    return count


def recover_dead_local_workers(study: optuna.Study, max_retry: int) -> list[int]:
    """Fail trials left RUNNING by a worker process of this host that no longer exists, and
    re-enqueue their parameters (up to ``max_retry`` times). Returns the failed trial numbers.

    The journal file has no heartbeat; this is its recovery: workers record ``host:pid`` when a
    trial starts, and any worker starting or polling on the same host can tell a dead one."""
    host = socket.gethostname()
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        who = t.user_attrs.get("worker")
        if not who or ":" not in who:
            continue
        whost, _, pid = who.rpartition(":")
        if whost != host or not pid.isdigit() or _pid_alive(int(pid)):
            continue
        try:
            ok = study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        if not ok:
            continue
        study._storage.set_trial_user_attr(t._trial_id, "reason", f"worker {who} died (process gone)")
        failed.append(t.number)
        if _retry_count(study, t) < max_retry and t.params:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
        log.warning("trial %d was left RUNNING by dead worker %s: failed%s", t.number, who,
                    " and re-enqueued" if _retry_count(study, t) < max_retry else "")
    return failed


def recover_stale(study: optuna.Study, max_retry: int) -> None:
    """Heartbeat-based recovery (PostgreSQL) plus the dead-local-pid check (all storages)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    recover_dead_local_workers(study, max_retry)


def run_worker(study: optuna.Study, objective: Callable[[optuna.Trial], Any], *, budget: int | None,
               timeout: float | None = None, max_retry: int = 2, poll_seconds: float = 2.0,
               on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
               only_enqueued: bool = False) -> int:
    """Run trials until the global budget is used (or, with ``only_enqueued``, until no WAITING
    trial is left). Waits while other workers hold the remaining budget, so that their trials
    can be recovered and retried if they die. Returns the number of trials this worker ran."""
    start = time.monotonic()
    ran = 0
    callbacks = [lambda s, t: on_trial(s, t)] if on_trial else []
    while True:
        if timeout is not None and time.monotonic() - start >= timeout:
            log.info("search.timeout=%ss reached: this worker stops", timeout)
            break
        recover_stale(study, max_retry)
        counts = trial_counts(study)
        done = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
        waiting, running = counts[TrialState.WAITING], counts[TrialState.RUNNING]
        if only_enqueued:
            if waiting == 0:
                if running == 0:
                    break
                time.sleep(poll_seconds)  # others hold the last points; retry them if they die
                continue
        elif budget is not None:
            if done >= budget:
                break
            if done + running >= budget and waiting == 0:
                time.sleep(poll_seconds)
                continue
        study.optimize(objective, n_trials=1, callbacks=callbacks, catch=(), gc_after_trial=False)
        ran += 1
    return ran


def over_budget(study: optuna.Study, trial: optuna.Trial, budget: int) -> bool:
    """True if trials started before this one already hold the whole budget (a race lost)."""
    ahead = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                      TrialState.RUNNING)):
        if t.number < trial.number:
            ahead += 1
    return ahead >= budget
