"""Worker identity and the recovery of trials left RUNNING by dead workers.

A trial left RUNNING by a worker that died is failed (with the reason) and a copy is enqueued
(``retry_history`` / ``failed_trial`` system attributes, exactly as optuna's
``RetryHeartbeatStaleTrialCallback`` does, up to ``max_retry`` times):

* PostgreSQL: by heartbeat -- every running trial's worker beats every ``heartbeat_interval``
  seconds; a trial silent for ``grace_period`` seconds is failed by any other worker.
* journal file / SQLite (no heartbeat in optuna): every worker records ``host:pid`` on its
  trials, and its process start time (against pid reuse) once in the study
  (:func:`record_worker`); a worker starting or polling on the same host fails the trials of a
  worker whose process is gone. (A journal shared over NFS by
  several hosts cannot see other hosts' processes: use PostgreSQL there.)
"""

from __future__ import annotations

import copy
import logging
import os
import socket
import warnings
from datetime import datetime
from pathlib import Path
from typing import Callable

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from .enqueue import live_trials
from .storage import RetryStaleTrial

__all__ = ["ORPHAN_SECONDS", "worker_id", "process_started", "record_worker", "recover_dead_local_workers",
           "recover_stale", "fail_stale_trials"]

log = logging.getLogger("effnas")

# A RUNNING trial that never recorded its worker (the process died between optuna's ask and the
# first line of the objective) is an orphan after this long: no heartbeat or pid can vouch for it.
ORPHAN_SECONDS = 300.0


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def process_started(pid: int) -> str | None:
    """The start time of a process (clock ticks since boot, Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


# Study system attribute ``worker_started:<host>:<pid>``: the start time of that worker process.
_STARTED = "worker_started:"


def record_worker(study: optuna.Study) -> None:
    """Record this process's start time in the study, once per process (not on every trial: each
    trial attribute is one more storage write), so that a trial of a dead worker whose pid was
    given to another process is still recognised as dead.

    Run it after a first :func:`recover_stale`: a new worker that got the pid of a dead worker of
    the same study then fails that worker's trials with the dead one's record before replacing
    it. (Trials written before this record existed carry a ``worker_started`` attribute, still
    read.)"""
    started = process_started(os.getpid())
    if started is None:
        return
    key = _STARTED + worker_id()
    storage = study._storage
    if storage.get_study_system_attrs(study._study_id).get(key) != started:
        storage.set_study_system_attr(study._study_id, key, started)


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
    recorded: dict | None = None  # the study's record of worker start times, read when needed
    running = [t for t in live_trials(study) if t.state == TrialState.RUNNING]
    for t in running:
        who = t.user_attrs.get("worker")
        if _orphaned(t):
            reason = f"orphaned: its worker never recorded itself within {ORPHAN_SECONDS:.0f}s"
        else:
            if not who or ":" not in who:
                continue
            whost, _, pid = who.rpartition(":")
            if whost != host or not pid.isdigit():
                continue
            started = t.user_attrs.get("worker_started")
            if started is None:
                if recorded is None:
                    recorded = study._storage.get_study_system_attrs(study._study_id)
                started = recorded.get(_STARTED + who)
            if _pid_alive(int(pid), started):
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

