"""The study layer: storages, samplers, pruners, the worker loop that shares one study, dead-worker
recovery, signals, the global budget and enqueued points. Optuna's own objects do the work."""

from .enqueue import BudgetTaken, enqueue_once, open_study, over_budget, trial_counts
from .pruners import PRUNERS, PrunerConfig, make_pruner
from .recovery import ORPHAN_SECONDS, fail_stale_trials, recover_dead_local_workers, recover_stale, worker_id
from .samplers import SAMPLERS, SamplerConfig, make_sampler
from .signals import Interrupted, exit_code, handle_signals, interruptible
from .storage import (STORAGES, JournalConfig, PostgresConfig, RetryStaleTrial, SqliteConfig, StorageConfig,
                      concurrent_workers, make_storage, storage_config)
from .workers import run_worker

__all__ = [
    "BudgetTaken", "Interrupted", "JournalConfig", "ORPHAN_SECONDS", "PRUNERS", "PostgresConfig", "PrunerConfig",
    "RetryStaleTrial", "SAMPLERS", "STORAGES", "SamplerConfig", "SqliteConfig", "StorageConfig",
    "concurrent_workers", "enqueue_once", "exit_code", "fail_stale_trials", "handle_signals", "interruptible",
    "make_pruner", "make_sampler", "make_storage", "open_study", "over_budget", "recover_dead_local_workers",
    "recover_stale", "run_worker", "storage_config", "trial_counts", "worker_id",
]
