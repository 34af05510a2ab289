"""Optuna storages, one registry entry each: a journal file (default, safe for many local
processes), SQLite (one process only) and PostgreSQL (clusters: ``RDBStorage`` with heartbeats and
:class:`RetryStaleTrial`). Each entry is the ``storage`` config group's schema and builds itself.
"""

from __future__ import annotations

import copy
import logging
import os
import random
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

import optuna
from omegaconf import MISSING

from ..registry import Registry
from ..schema import Schema, rule
from ..secrets import redact_url
from .locks import HolderSymlinkLock

__all__ = ["STORAGES", "StorageConfig", "JournalConfig", "SqliteConfig", "PostgresConfig", "RetryStaleTrial",
           "make_storage", "storage_config", "concurrent_workers"]

log = logging.getLogger("effnas")

STORAGES: Registry[type] = Registry("storage")


@dataclass
class StorageConfig(Schema):
    """What every storage has: its kind and how often a trial of a dead worker is retried."""

    _key: ClassVar[str] = "storage"

    kind: str = MISSING
    url: Optional[str] = None
    max_retry: int = rule(2, ge=0)  # re-runs of a trial whose worker died or was interrupted

    def describe(self, folder: Path) -> str:
        return f"{self.kind} {redact_url(self.url)}"

    def build(self, folder: Path, workers: int = 1) -> optuna.storages.BaseStorage:
        raise NotImplementedError


@STORAGES.register("journal")
@dataclass
class JournalConfig(StorageConfig):
    """An append-only journal file in the study folder (the default): safe for many local processes.
    No heartbeats: a dead worker's trial is failed by the next worker on the same host that sees
    its recorded ``host:pid`` gone. On a file system shared by several hosts use PostgreSQL."""

    kind: str = "journal"
    url: Optional[str] = None  # path of the journal file; null = <results_dir>/<study>/study.journal
    lock: str = rule("symlink", choices=("symlink", "open"))  # symlink (local disk) | open (NFS)

    def validate(self) -> None:
        scheme = re.match(r"^([a-z][a-z0-9+.-]*)://", self.url or "", re.I)
        if scheme:  # a database URL here would become a file path (password included)
            kind = "sqlite" if scheme[1].lower() == "sqlite" else "postgres"
            raise self.fail("url", f"{redact_url(self.url)!r} is a database URL, but storage=journal takes the path "
                                   f"of a journal file; add storage={kind} to use the database")

    def journal_path(self, folder: Path) -> Path:
        return Path(self.url).expanduser() if self.url else folder / "study.journal"

    def describe(self, folder: Path) -> str:
        return f"journal file {self.journal_path(folder)}"

    def build(self, folder: Path, workers: int = 1) -> optuna.storages.BaseStorage:
        path = self.journal_path(folder)
        if path.is_dir():
            raise ValueError(f"storage.url={path} is a directory; expected the path of a journal file "
                             f"(e.g. {path / 'study.journal'}) or null for <study folder>/study.journal")
        path.parent.mkdir(parents=True, exist_ok=True)
        if os.environ.get("EFFNAS_STORAGE_URL"):
            log.warning("EFFNAS_STORAGE_URL is set, but storage=journal: the study is in the journal file %s "
                        "(add storage=postgres to use the database)", path)
        journal = optuna.storages.journal
        lock = (journal.JournalFileOpenLock(str(path)) if self.lock == "open"
                else HolderSymlinkLock(str(path)))
        return optuna.storages.JournalStorage(journal.JournalFileBackend(str(path), lock_obj=lock))


@STORAGES.register("sqlite")
@dataclass
class SqliteConfig(StorageConfig):
    """One process only: several writers give "database is locked" and orphaned RUNNING trials (a
    warning says so when ``workers`` > 1 or a parallel Hydra multirun shares it)."""

    kind: str = "sqlite"
    url: Optional[str] = None  # null = sqlite:///<results_dir>/<study>/study.db

    def validate(self) -> None:
        if self.url is not None and not self.url.startswith("sqlite:///"):
            raise self.fail("url", f"must be a sqlite:/// URL, got {redact_url(self.url)!r}")

    def build(self, folder: Path, workers: int = 1) -> optuna.storages.BaseStorage:
        url = self.url or f"sqlite:///{folder / 'study.db'}"
        if concurrent_workers(workers) > 1:
            log.warning("storage=sqlite is for one process only, but %s share it: expect 'database is "
                        "locked' errors and trials orphaned in RUNNING; use storage=journal (one machine) "
                        "or storage=postgres (cluster)", _describe_sharing(workers))
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        return _rdb_storage(url)


@STORAGES.register("postgres")
@dataclass
class PostgresConfig(StorageConfig):
    """Clusters: every worker connects to one PostgreSQL database; the password is never printed
    or saved. Prefer ``EFFNAS_STORAGE_URL`` to ``storage.url=`` (visible in ``ps``)."""

    kind: str = "postgres"
    url: Optional[str] = "${oc.env:EFFNAS_STORAGE_URL,null}"  # postgresql://user:password@host:5432/db
    heartbeat_interval: int = rule(10, ge=1)     # seconds between a running trial's heartbeats
    grace_period: Optional[int] = rule(30, ge=1)  # a RUNNING trial silent this long is failed (> interval)

    def validate(self) -> None:
        if not self.url:
            raise self.fail("url", "is not set: storage=postgres needs storage.url (or the EFFNAS_STORAGE_URL "
                                   "environment variable), e.g. postgresql://user:password@host:5432/db")
        if not str(self.url).startswith(("postgresql", "postgres")):
            raise self.fail("url", f"must be a postgresql:// URL, got {redact_url(self.url)!r}")
        if self.grace_period is not None and self.grace_period <= self.heartbeat_interval:
            raise self.fail("grace_period", f"({self.grace_period}) must exceed storage.heartbeat_interval "
                                            f"({self.heartbeat_interval})")

    @property
    def grace_seconds(self) -> int:
        return self.grace_period or 2 * self.heartbeat_interval

    def describe(self, folder: Path) -> str:
        return (f"postgres {redact_url(self.url)} (heartbeat every {self.heartbeat_interval}s, "
                f"grace {self.grace_seconds}s, max_retry {self.max_retry})")

    def build(self, folder: Path, workers: int = 1) -> optuna.storages.BaseStorage:
        url = _postgres_driver_url(str(self.url))
        engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if url.startswith(("postgresql+psycopg2://", "postgresql+psycopg://")):
            engine_kwargs["connect_args"] = {"connect_timeout": 10}  # an unreachable server fails, not hangs
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return _rdb_storage(url, engine_kwargs=engine_kwargs, heartbeat_interval=self.heartbeat_interval,
                                grace_period=self.grace_seconds,
                                heartbeat_stale_trial_callback=RetryStaleTrial(self.max_retry))


def storage_config(kind: str = "journal", **options: Any) -> StorageConfig:
    """The storage config of ``kind`` (Python API): ``storage_config("postgres", url=...)``."""
    return STORAGES.get(kind)(**options)


def make_storage(cfg: StorageConfig, folder: Path, workers: int = 1) -> optuna.storages.BaseStorage:
    """The Optuna storage of a study folder. ``workers``: how many processes will share it (from
    the config); a Hydra multirun whose launcher runs jobs side by side counts as several."""
    return cfg.build(folder, workers)


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


_SCHEMA_ATTEMPTS = 8


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

