"""Studies, storages, samplers and pruners, and the worker loop that shares one study.

One process = one worker running ``study.optimize`` against the shared storage; N workers come
from Hydra multirun (``-m worker=range(N)`` with the joblib, submitit_local or submitit_slurm
launcher) or N plain invocations. Optuna's own objects do the work:

* storage: a journal file (default, safe for many local processes), SQLite (one process only),
  or PostgreSQL through ``RDBStorage`` with heartbeats and ``RetryHeartbeatStaleTrialCallback``;
* sampler: TPE (seeded, per worker), random, NSGA-II; pruner: median, hyperband, threshold, none.

The trial budget is global across workers: a worker starts a new trial only while
``COMPLETE + PRUNED + RUNNING < budget``; a trial that finds itself beyond the budget (two workers
raced for the last slot) is failed as ``surplus`` and is not counted.

Dead workers. A trial left RUNNING by a worker that died is failed (with the reason) and a copy is
enqueued (``retry_history`` / ``failed_trial`` system attributes, exactly as optuna's
``RetryHeartbeatStaleTrialCallback`` does, up to ``max_retry`` times):

* PostgreSQL: by heartbeat -- every running trial's worker beats every ``heartbeat_interval``
  seconds; a trial silent for ``grace_period`` seconds is failed by any other worker.
* journal file / SQLite (no heartbeat in optuna): every worker records ``host:pid`` (and the
  process start time, against pid reuse) on its trials; a worker starting or polling on the
  same host fails the trials of a worker whose process is gone. So after a crash, restarting a
  worker on the same machine resumes cleanly. (A journal shared over NFS by several hosts cannot
  see other hosts' processes: use PostgreSQL there.)

Signals. Inside :func:`handle_signals`, SIGINT and SIGTERM end the running trial as FAIL with
``reason = "interrupted by SIGTERM"``, re-enqueue it (a restarted worker runs it again) and raise
:class:`Interrupted` to the caller, which writes its results and exits 130 / 143. A signal that
arrives while the worker talks to the storage (optuna's own bookkeeping between trials, or a
storage call inside the objective) is held until that call is over: a journal lock or a database
transaction is never cut in half.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import re
import signal
import socket
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from .results import redact_secrets, redact_url

__all__ = ["Interrupted", "BudgetTaken", "StorageConfig", "make_storage", "make_sampler", "make_pruner",
           "SAMPLERS", "PRUNERS", "STORAGES", "worker_id", "recover_dead_local_workers", "recover_stale",
           "fail_stale_trials", "RetryStaleTrial", "handle_signals", "interruptible", "run_worker",
           "trial_counts", "open_study", "over_budget", "concurrent_workers", "RedactSecrets",
           "redact_secrets", "enqueue_once"]

log = logging.getLogger("effnas")

SAMPLERS = ("tpe", "random", "nsgaii", "grid")
PRUNERS = ("median", "hyperband", "threshold", "none")
STORAGES = ("journal", "sqlite", "postgres")

# A RUNNING trial that never recorded its worker (the process died between optuna's ask and the
# first line of the objective) is an orphan after this long: no heartbeat or pid can vouch for it.
ORPHAN_SECONDS = 300.0


# --------------------------------------------------------------------------------------------
# Signals


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread on SIGINT / SIGTERM; optuna fails the running trial and re-raises."""

    def __init__(self, signame: str) -> None:
        super().__init__(signame)
        self.signame = signame

    @property
    def exit_code(self) -> int:
        return 128 + (signal.SIGTERM if self.signame == "SIGTERM" else signal.SIGINT)


class _SignalState:
    """Where a signal may raise (``armed``) and the one that waits for such a place (``pending``)."""

    def __init__(self) -> None:
        self.installed = False
        self.armed = True
        self.pending: str | None = None
        self.delivered = False  # one Interrupted per run: later signals do not cut the clean-up short


_SIGNALS = _SignalState()


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


# Code that must not be cut in half by an exception from a signal handler: a journal write holds
# a lock file, a database call a transaction.
_UNSAFE_MODULES = ("optuna.storages", "sqlalchemy", "psycopg2")
_REDELIVER_SECONDS = 0.05


def _in_storage_call(frame: Any) -> bool:
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).startswith(_UNSAFE_MODULES):
            return True
        frame = frame.f_back
    return False


def _raise_pending() -> None:
    if _SIGNALS.installed and _SIGNALS.pending and _in_main_thread():
        name, _SIGNALS.pending = _SIGNALS.pending, None
        if not _SIGNALS.delivered:
            _SIGNALS.delivered = True
            raise Interrupted(name)


@contextmanager
def handle_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM (what SLURM sends before preemption) into :class:`Interrupted`.

    Raised at once where code runs under ``interruptible(True)`` (the default: training, sleeps),
    and at the end of an ``interruptible(False)`` block otherwise (storage calls). No-op outside the
    main thread."""
    if not _in_main_thread():
        yield
        return

    def on_signal(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if _SIGNALS.delivered:
            log.warning("%s received again: still writing the results, please wait", name)
            return
        if _SIGNALS.armed and not _in_storage_call(frame):
            _SIGNALS.pending, _SIGNALS.delivered = None, True
            raise Interrupted(name)
        _SIGNALS.pending = _SIGNALS.pending or name
        if _SIGNALS.armed:  # a storage call inside the objective: deliver again once it is over
            timer = threading.Timer(_REDELIVER_SECONDS, os.kill, (os.getpid(), signum))
            timer.daemon = True
            timer.start()

    before = (_SIGNALS.installed, _SIGNALS.armed, _SIGNALS.pending, _SIGNALS.delivered)
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    _SIGNALS.installed, _SIGNALS.armed, _SIGNALS.pending, _SIGNALS.delivered = True, True, None, False
    try:
        yield
        _raise_pending()  # a signal held back during the last storage call is not lost
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _SIGNALS.installed, _SIGNALS.armed, _SIGNALS.pending, _SIGNALS.delivered = before


@contextmanager
def interruptible(allowed: bool) -> Iterator[None]:
    """Within :func:`handle_signals`: may a signal raise here (``True``), or must it wait until the
    block is left (``False``)? Entering an allowed block raises a held signal at once."""
    if not _in_main_thread():
        yield
        return
    before = _SIGNALS.armed
    _SIGNALS.armed = allowed
    try:
        if allowed:
            _raise_pending()
        yield
    finally:
        _SIGNALS.armed = before
    if not before:
        return
    _raise_pending()


# --------------------------------------------------------------------------------------------
# Workers


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _process_started(pid: int) -> str | None:
    """The start time of a process (clock ticks since boot, Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def _pid_alive(pid: int, started: str | None = None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # not Linux: trust kill(0)
    fields = stat[stat.rfind(")") + 2:].split()
    if fields and fields[0] in ("Z", "X"):  # a zombie waiting for its parent is dead
        return False
    return started is None or len(fields) <= 19 or fields[19] == started


# --------------------------------------------------------------------------------------------
# Storages


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
        for name in ("heartbeat_interval", "grace_period", "max_retry"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"storage.{name} must be an integer, got {value!r}")
        if self.heartbeat_interval < 1:
            raise ValueError(f"storage.heartbeat_interval must be >= 1 s, got {self.heartbeat_interval!r}")
        if self.grace_period is not None and self.grace_period <= self.heartbeat_interval:
            raise ValueError(f"storage.grace_period ({self.grace_period}) must exceed heartbeat_interval "
                             f"({self.heartbeat_interval})")
        if self.max_retry < 0:
            raise ValueError(f"storage.max_retry must be >= 0, got {self.max_retry!r}")
        if self.lock not in ("symlink", "open"):
            raise ValueError(f"storage.lock must be symlink or open, got {self.lock!r}")

    @property
    def grace_seconds(self) -> int:
        return self.grace_period or 2 * self.heartbeat_interval

    def describe(self, folder: Path) -> str:
        if self.kind == "journal":
            return f"journal file {self.journal_path(folder)}"
        if self.kind == "postgres":
            return (f"postgres {redact_url(self.url)} (heartbeat every {self.heartbeat_interval}s, "
                    f"grace {self.grace_seconds}s, max_retry {self.max_retry})")
        return f"{self.kind} {redact_url(self.url)}"

    def journal_path(self, folder: Path) -> Path:
        return Path(self.url) if self.url else folder / "study.journal"


class RetryStaleTrial(optuna.storages.RetryHeartbeatStaleTrialCallback):
    """optuna's retry of a failed trial (a WAITING copy with ``failed_trial`` / ``retry_history``
    system attributes, at most ``max_retry`` times), minus the attributes that name the dead
    attempt's worker and its failure reason. Returns whether a copy was enqueued."""

    _NOT_COPIED = ("worker", "worker_started", "reason")

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:  # type: ignore[override]
        history = trial.system_attrs.get("retry_history", [])  # as optuna counts them
        if self._max_retry is not None and self._max_retry < len(history) + 1:
            return False
        trial = copy.deepcopy(trial)
        trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in self._NOT_COPIED}
        super().__call__(study, trial)
        return True


_SCHEMA_ATTEMPTS = 8


def _storage_error(url: str, exc: Exception) -> ValueError:
    first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return ValueError(f"cannot open storage {redact_url(url)}: {first[0] if first else type(exc).__name__}")


def make_storage(cfg: StorageConfig, folder: Path, workers: int = 1) -> optuna.storages.BaseStorage:
    """The Optuna storage of a study folder. ``workers``: how many processes will share it (from
    the config); a Hydra multirun whose launcher runs jobs side by side counts as several."""
    if cfg.kind == "journal":
        path = cfg.journal_path(folder)
        path.parent.mkdir(parents=True, exist_ok=True)
        journal = optuna.storages.journal
        lock = (journal.JournalFileOpenLock(str(path)) if cfg.lock == "open"
                else journal.JournalFileSymlinkLock(str(path)))
        return optuna.storages.JournalStorage(journal.JournalFileBackend(str(path), lock_obj=lock))
    if cfg.kind == "sqlite":
        url = cfg.url or f"sqlite:///{folder / 'study.db'}"
        if not url.startswith("sqlite:///"):
            raise ValueError(f"storage=sqlite needs a sqlite:/// URL, got {redact_url(url)!r}")
        sharing = concurrent_workers(workers)
        if sharing > 1:
            log.warning("storage=sqlite is for one process only, but %s share it: expect 'database is "
                        "locked' errors and trials orphaned in RUNNING; use storage=journal (one machine) "
                        "or storage=postgres (cluster)", _describe_sharing(workers))
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        return _rdb_storage(url)
    url = _postgres_driver_url(str(cfg.url))
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith(("postgresql+psycopg2://", "postgresql+psycopg://")):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}  # an unreachable server fails, not hangs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _rdb_storage(url, engine_kwargs=engine_kwargs, heartbeat_interval=cfg.heartbeat_interval,
                            grace_period=cfg.grace_seconds,
                            heartbeat_stale_trial_callback=RetryStaleTrial(cfg.max_retry))


# Messages of a lost race to create optuna's tables: PostgreSQL's catalog, SQLite's alembic table.
_SCHEMA_RACE = ("duplicate key", "already exists", "UNIQUE constraint failed", "database is locked")


def _rdb_storage(url: str, **kwargs: Any) -> optuna.storages.RDBStorage:
    """``RDBStorage``, retried when workers that start together on an empty database all create
    optuna's tables and all but one lose the race (the tables exist a moment later); any other
    error is one line without the password."""
    import sqlalchemy.exc

    for attempt in range(_SCHEMA_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except sqlalchemy.exc.SQLAlchemyError as exc:
            racing = isinstance(exc, (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError,
                                      sqlalchemy.exc.OperationalError)) and any(m in str(exc) for m in _SCHEMA_RACE)
            if not racing or attempt == _SCHEMA_ATTEMPTS - 1:
                raise _storage_error(url, exc) from None
            time.sleep(0.2 * (attempt + 1) + random.random() * 0.3)
        except ImportError as exc:  # the driver named in the URL is missing
            raise ValueError(f"cannot load the database driver for {redact_url(url)} ({exc}); for "
                             f"PostgreSQL: pip install 'effnas[postgres]'") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _postgres_driver_url(url: str) -> str:
    """``postgres[ql]://`` -> ``postgresql+<driver>://`` with a driver that is installed: SQLAlchemy
    2.1 reads a bare ``postgresql://`` as psycopg 3, while ``effnas[postgres]`` installs psycopg2."""
    url = re.sub(r"^postgres://", "postgresql://", url)  # SQLAlchemy knows only the long name
    if not url.startswith("postgresql://"):
        return url  # the user chose a driver
    import importlib.util

    for module, driver in (("psycopg2", "psycopg2"), ("psycopg", "psycopg")):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{driver}://" + url[len("postgresql://"):]
    raise ValueError("storage=postgres needs a PostgreSQL driver: pip install 'effnas[postgres]' "
                     "(psycopg2-binary) or psycopg")


def _hydra_launcher() -> str | None:
    """The launcher class of the Hydra multirun this job belongs to (None outside a multirun)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:  # pragma: no cover
        return None
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return str(hydra_cfg.launcher.get("_target_", "")).rpartition(".")[2] or None


def concurrent_workers(declared: int = 1) -> int:
    """How many workers may use the storage at once: ``workers`` from the config, and at least 2
    in a Hydra multirun whose launcher runs its jobs side by side (joblib, submitit); the basic
    launcher runs them one after the other."""
    launcher = _hydra_launcher()
    if launcher is not None and launcher != "BasicLauncher":
        return max(int(declared), 2)
    return int(declared)


def _describe_sharing(declared: int) -> str:
    launcher = _hydra_launcher()
    if launcher is not None and launcher != "BasicLauncher":
        return f"the jobs of this Hydra multirun ({launcher}, run side by side)"
    return f"workers={declared} processes"


# --------------------------------------------------------------------------------------------
# Secrets in what Hydra writes and prints


def _redact_log_records() -> None:
    """Redact every log record of this process as it is made (a record factory outlives the
    handler swaps of Hydra's launchers, which reconfigure logging before they list the jobs)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redacts_secrets", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 -- a malformed record is logging's business
            return record
        clean = redact_secrets(message)
        if clean != message:
            record.msg, record.args = clean, None
        return record

    factory.redacts_secrets = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def _redact_file(path: Path) -> None:
    from .results import write_text

    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return
    clean = redact_secrets(text)
    if clean != text:
        write_text(clean, path)


class RedactSecrets:
    """Hydra callback (``hydra.callbacks``, set by ``conf/storage/postgres.yaml``): a storage URL
    given on the command line (``storage.url=postgresql://user:password@...``) is not left in
    what Hydra prints ("#0 : ... storage.url=...") or saves (``multirun.yaml``, ``.hydra/*.yaml``).

    Hydra has saved and printed those before any job code runs, so this scrubs them as soon as it
    can. Jobs a launcher pickles for later (``.submitit/``) still carry the URL they need: prefer
    the ``EFFNAS_STORAGE_URL`` environment variable, which Hydra never resolves into its files."""

    def __init__(self, **_: Any) -> None:
        pass

    @staticmethod
    def _scrub(config: Any, multirun: bool) -> None:
        hydra_cfg = config.hydra
        if multirun:
            _redact_file(Path(hydra_cfg.sweep.dir) / "multirun.yaml")
        subdir = hydra_cfg.get("output_subdir")
        output_dir = hydra_cfg.runtime.get("output_dir") if "runtime" in hydra_cfg else None
        if subdir and output_dir:
            for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
                _redact_file(Path(output_dir) / subdir / name)

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        _redact_log_records()

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        _redact_log_records()

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        _redact_log_records()
        try:
            from hydra.core.hydra_config import HydraConfig
            from hydra.types import RunMode

            multirun = HydraConfig.get().mode == RunMode.MULTIRUN
        except Exception:  # noqa: BLE001 -- best effort, never stops a job
            multirun = False
        try:
            self._scrub(config, multirun)
        except Exception as exc:  # noqa: BLE001
            log.debug("could not scrub Hydra's files: %s", exc)

    def on_job_end(self, config: Any, job_return: Any = None, **kwargs: Any) -> None:
        pass

    def on_run_end(self, config: Any, **kwargs: Any) -> None:
        pass

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        try:
            _redact_file(Path(config.hydra.sweep.dir) / "multirun.yaml")
        except Exception:  # noqa: BLE001
            pass


# --------------------------------------------------------------------------------------------
# Samplers, pruners, studies


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


# --------------------------------------------------------------------------------------------
# Dead workers


def _heartbeat_interval(storage: optuna.storages.BaseStorage) -> int | None:
    get = getattr(storage, "get_heartbeat_interval", None)
    return get() if get is not None else None


def _fail_running(study: optuna.Study, trial: optuna.trial.FrozenTrial, reason: str) -> bool:
    """RUNNING -> FAIL with a reason; False if another worker finished it first."""
    storage = study._storage
    try:
        storage.set_trial_user_attr(trial._trial_id, "reason", reason)  # a finished trial refuses attrs
        return bool(storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL))
    except UpdateFinishedTrialError:
        return False


def _retry(study: optuna.Study, trial_id: int, max_retry: int | None, callback: Callable | None = None) -> bool:
    failed = copy.deepcopy(study._storage.get_trial(trial_id))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        callback = callback or RetryStaleTrial(max_retry)
        done = callback(study, failed)
    return bool(done) if done is not None else True


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Heartbeat storages (PostgreSQL): fail the RUNNING trials whose worker has been silent for
    the grace period -- with the reason -- and pass them to the storage's stale-trial callback
    (:class:`RetryStaleTrial`: re-enqueue). Returns the failed trial numbers.

    Like ``optuna.storages.fail_stale_trials``, which optuna also runs before each trial; this
    one records why, so that trials.csv can say it."""
    storage = study._storage
    interval = _heartbeat_interval(storage)
    if not interval or not hasattr(storage, "_get_stale_trial_ids"):
        return []
    backend = getattr(storage, "_backend", storage)  # optuna wraps RDBStorage in a cache
    grace = getattr(backend, "grace_period", None) or 2 * interval
    failed: list[optuna.trial.FrozenTrial] = []
    for trial_id in storage._get_stale_trial_ids(study._study_id):
        trial = storage.get_trial(trial_id)
        who = trial.user_attrs.get("worker", "?")
        if _fail_running(study, trial, f"no heartbeat from worker {who} for over {grace}s (worker died?)"):
            failed.append(trial)
    callback = storage.get_heartbeat_stale_trial_callback()
    for trial in failed:
        retried = _retry(study, trial._trial_id, None, callback) if callback is not None else False
        log.warning("trial %d: worker %s sent no heartbeat for over %ss: failed%s", trial.number,
                    trial.user_attrs.get("worker", "?"), grace, " and re-enqueued" if retried else "")
    return [t.number for t in failed]


def _orphaned(trial: optuna.trial.FrozenTrial) -> bool:
    start = trial.datetime_start
    if trial.user_attrs.get("worker") or start is None:
        return False
    now = datetime.now(start.tzinfo) if start.tzinfo else datetime.now()
    return (now - start).total_seconds() > ORPHAN_SECONDS


def recover_dead_local_workers(study: optuna.Study, max_retry: int) -> list[int]:
    """Fail trials left RUNNING by a worker process of this host that no longer exists, and
    re-enqueue them (up to ``max_retry`` times). Returns the failed trial numbers.

    The journal file has no heartbeat; this is its recovery: workers record ``host:pid`` (and the
    process start time) when a trial starts, and any worker starting or polling on the same host
    can tell a dead one. Safe to run from several workers at once: one of them wins each trial."""
    host = socket.gethostname()
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        who = t.user_attrs.get("worker")
        if _orphaned(t):
            reason = f"orphaned: its worker never recorded itself within {ORPHAN_SECONDS:.0f}s"
        else:
            if not who or ":" not in who:
                continue
            whost, _, pid = who.rpartition(":")
            if whost != host or not pid.isdigit() or _pid_alive(int(pid), t.user_attrs.get("worker_started")):
                continue
            reason = f"worker {who} died (process gone)"
        if not _fail_running(study, t, reason):
            continue
        failed.append(t.number)
        retried = _retry(study, t._trial_id, max_retry)
        log.warning("trial %d: %s: failed%s", t.number, reason, " and re-enqueued" if retried else "")
    return failed


def recover_stale(study: optuna.Study, max_retry: int) -> list[int]:
    """Heartbeats where the storage has them (PostgreSQL), the dead-local-pid check elsewhere."""
    if _heartbeat_interval(study._storage):
        return fail_stale_trials(study)
    return recover_dead_local_workers(study, max_retry)


# --------------------------------------------------------------------------------------------
# Budget and duplicates


class BudgetTaken(Exception):
    """This trial started after other workers had already taken the whole budget (or its enqueued
    point was already evaluated by another trial): it ends as FAIL and is not counted."""


class _TakenOver(Exception):
    """Another worker failed this worker's trial (missed heartbeats) while it was running."""


def over_budget(study: optuna.Study, trial: optuna.Trial, budget: int) -> bool:
    """True if trials started before this one already hold the whole budget (a race lost)."""
    ahead = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                      TrialState.RUNNING)):
        if t.number < trial.number:
            ahead += 1
    return ahead >= budget


def _point(t: optuna.trial.FrozenTrial) -> str | None:
    fixed = t.system_attrs.get("fixed_params")
    return json.dumps(fixed, sort_keys=True, default=str) if fixed else None


def _twin_of(trials: list[optuna.trial.FrozenTrial], trial: optuna.trial.FrozenTrial) -> int | None:
    """An earlier trial, not failed, of the same enqueued point (two workers starting together
    can both enqueue a warm-start point: ``skip_if_exists`` is check-then-act)."""
    key = _point(trial)
    if key is None:
        return None
    for t in trials:
        if t.number < trial.number and t.state != TrialState.FAIL and _point(t) == key:
            return t.number
    return None


def enqueue_once(study: optuna.Study, points: list[dict[str, Any]], folder: Path,
                 user_attrs: dict[str, Any] | None = None) -> int:
    """Enqueue each point (warm start) unless the study already has it. ``skip_if_exists`` is
    check-then-enqueue, so workers starting together would each enqueue it: a lock file in the
    study folder serialises the workers that share the folder (one machine, or a shared file
    system); :func:`run_worker` drops any twin that still slips through (other hosts)."""
    import fcntl

    if not points:
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    before = len(study.get_trials(deepcopy=False))
    with open(folder / ".enqueue.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            for params in points:
                study.enqueue_trial(params, user_attrs=user_attrs, skip_if_exists=True)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    return max(0, len(study.get_trials(deepcopy=False)) - before)


def _drop_duplicate_waiting(study: optuna.Study) -> None:
    trials = study.get_trials(deepcopy=False)
    for t in trials:
        if t.state != TrialState.WAITING:
            continue
        twin = _twin_of(trials, t)
        if twin is None:
            continue
        storage = study._storage
        try:  # claim it (WAITING -> RUNNING is atomic: only one worker gets it), then close it
            if not storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                continue
            storage.set_trial_user_attr(t._trial_id, "reason", f"duplicate of trial {twin} (enqueued twice)")
            storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue
        log.info("trial %d was enqueued twice (as trial %d): dropped", t.number, twin)


# --------------------------------------------------------------------------------------------
# The worker loop


class _QuietExpectedFailures(logging.Filter):
    """optuna logs every exception that ends a trial as a warning with its traceback; the ones
    raised on purpose (interrupted, budget taken, failed by another worker) are reported by effnas
    in one line instead."""

    _FAILED = re.compile(r"Trial (\d+) failed")

    def __init__(self) -> None:
        super().__init__()
        self.quiet: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        match = self._FAILED.match(str(record.msg))
        if match is None:
            return True
        number = int(match.group(1))
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, (Interrupted, BudgetTaken, _TakenOver, UpdateFinishedTrialError)):
            self.quiet.add(number)
            return False
        return number not in self.quiet


_QUIET = _QuietExpectedFailures()


def _quiet_optuna() -> None:
    logger = logging.getLogger("optuna.study._optimize")
    if _QUIET not in logger.filters:
        logger.addFilter(_QUIET)


class _Attempt:
    """What the worker knows about the trial it is running (for the exception handlers)."""

    def __init__(self) -> None:
        self.trial_id: int | None = None
        self.number: int | None = None
        self.returned = False
        self.taken_over = False


def run_worker(study: optuna.Study, objective: Callable[[optuna.Trial], Any], *, budget: int | None,
               timeout: float | None = None, max_retry: int = 2, poll_seconds: float = 2.0,
               on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
               only_enqueued: bool = False) -> int:
    """Run trials until the global budget is used (or, with ``only_enqueued``, until no WAITING
    trial is left). Returns the number of trials this worker ran to the end.

    Each trial is one ``study.optimize(n_trials=1)`` call, so optuna runs its heartbeat thread
    (PostgreSQL) for it. Before each trial the worker recovers trials of dead workers; while other
    workers hold the rest of the budget it waits (``poll_seconds``) instead of stopping, so that
    a trial of a worker that dies is retried. ``budget`` counts COMPLETE + PRUNED trials.

    ``only_enqueued`` (stage 2's exact grid): trials only run enqueued points; the objective
    itself must reject a trial that optuna created because another worker popped the last point.

    Raises :class:`Interrupted` (inside :func:`handle_signals`) after failing and re-enqueuing the
    running trial."""
    _quiet_optuna()
    start = time.monotonic()
    ran = 0
    callbacks = [lambda s, t: on_trial(s, t)] if on_trial else []
    attempt = _Attempt()

    def run_one(trial: optuna.Trial) -> Any:
        attempt.trial_id, attempt.number = trial._trial_id, trial.number
        trial.set_user_attr("worker", worker_id())
        started = _process_started(os.getpid())
        if started is not None:
            trial.set_user_attr("worker_started", started)
        if not only_enqueued:
            _check_slot(study, trial, budget)
        try:
            with interruptible(True):
                value = objective(trial)
        except UpdateFinishedTrialError:
            attempt.taken_over = True
            raise _TakenOver() from None
        except Interrupted as exc:
            if "reason" not in study._storage.get_trial_user_attrs(trial._trial_id):
                try:
                    trial.set_user_attr("reason", f"interrupted by {exc.signame}")
                except UpdateFinishedTrialError:
                    pass
            raise
        if study._storage.get_trial(trial._trial_id).state.is_finished():
            attempt.taken_over = True  # failed as stale by another worker meanwhile
            raise _TakenOver()
        attempt.returned = True
        return value

    with interruptible(False):
        while True:
            _raise_pending()
            if timeout is not None and time.monotonic() - start >= timeout:
                log.info("search.timeout=%ss reached: this worker stops", timeout)
                break
            recover_stale(study, max_retry)
            if not only_enqueued:
                _drop_duplicate_waiting(study)
            counts = trial_counts(study)
            done = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
            waiting, running = counts[TrialState.WAITING], counts[TrialState.RUNNING]
            if only_enqueued:
                if waiting == 0:
                    if running == 0:
                        break
                    _sleep(poll_seconds)  # others hold the last points; retry them if they die
                    continue
            elif budget is not None:
                if done >= budget:
                    break
                if done + running >= budget:
                    _sleep(poll_seconds)  # others hold the rest; their trials come back if they die
                    continue
            attempt.__init__()
            try:
                study.optimize(run_one, n_trials=1, callbacks=callbacks, catch=(), gc_after_trial=False)
            except BudgetTaken as exc:
                log.info("trial %s not run: %s", attempt.number, exc)
                continue
            except Interrupted as exc:
                if attempt.trial_id is not None:
                    _after_interrupt(study, attempt, exc.signame, max_retry)
                raise
            except Exception:
                if attempt.trial_id is not None and (attempt.taken_over or attempt.returned) and \
                        study._storage.get_trial(attempt.trial_id).state == TrialState.FAIL:
                    log.warning("trial %d was failed by another worker while this one ran it (no heartbeat "
                                "for the grace period: is storage.grace_period too short?); its result "
                                "is dropped and its retry runs it again", attempt.number)
                    continue
                raise
            ran += 1
    return ran


def _sleep(seconds: float) -> None:
    with interruptible(True):
        time.sleep(seconds)


def _check_slot(study: optuna.Study, trial: optuna.Trial, budget: int | None) -> None:
    """Raise :class:`BudgetTaken` if this trial is beyond the global budget or runs an enqueued
    point that another trial already holds."""
    trials = study.get_trials(deepcopy=False)
    frozen = next(t for t in trials if t._trial_id == trial._trial_id)
    twin = _twin_of(trials, frozen)
    if twin is not None:
        trial.set_user_attr("reason", f"duplicate of trial {twin} (enqueued twice)")
        raise BudgetTaken(f"its point is already trial {twin}")
    if budget is None or not over_budget(study, trial, budget):
        return
    trial.set_user_attr("reason", "surplus: the budget was already taken by other workers")
    if _point(frozen) is not None or "failed_trial" in frozen.system_attrs:
        # a popped point (warm start, retry) must not be lost with this trial
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.WAITING, params=frozen.params, distributions=frozen.distributions,
            user_attrs={k: v for k, v in frozen.user_attrs.items() if k not in RetryStaleTrial._NOT_COPIED},
            system_attrs=frozen.system_attrs))
    raise BudgetTaken("the budget was already taken by other workers")


def _after_interrupt(study: optuna.Study, attempt: _Attempt, signame: str, max_retry: int) -> None:
    """The interrupted trial is FAIL (optuna told it so); enqueue it again for the next worker."""
    with interruptible(False):
        try:
            trial = study._storage.get_trial(attempt.trial_id)
            if trial.state != TrialState.FAIL:
                return
            retried = _retry(study, attempt.trial_id, max_retry)
        except Exception as exc:  # noqa: BLE001 -- the interruption must still reach the caller
            log.warning("trial %s interrupted by %s: could not re-enqueue it (%s)", attempt.number, signame, exc)
            return
    log.warning("trial %d interrupted by %s: marked FAIL%s", attempt.number, signame,
                " and re-enqueued for the next worker" if retried else "")
