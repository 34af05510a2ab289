"""The worker loop: one process = one worker running ``study.optimize`` against the shared storage.

N workers come from Hydra multirun (``-m worker=range(N)`` with the joblib, submitit_local or
submitit_slurm launcher) or N plain invocations. Before each trial a worker recovers the trials of
dead workers (:mod:`.recovery`); the budget is global (:mod:`.enqueue`); SIGINT / SIGTERM fail the
running trial, re-enqueue it and reach the caller as :class:`~.signals.Interrupted`.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any, Callable

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from .attrs import defer_user_attrs, flush_user_attrs
from .enqueue import BudgetCounter, BudgetTaken, SearchExhausted, drop_duplicate_waiting, fixed_point, twin_of
from .recovery import _retry, record_worker, recover_stale, worker_id
from .signals import Interrupted, interruptible, raise_pending
from .storage import RetryStaleTrial

__all__ = ["run_worker"]

log = logging.getLogger("effnas")


class _TakenOver(Exception):
    """Another worker failed this worker's trial (missed heartbeats) while it was running."""


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
        if isinstance(exc, (Interrupted, BudgetTaken, SearchExhausted, _TakenOver, UpdateFinishedTrialError)):
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
    running trial.

    Per trial the worker looks at the trials that finished since the previous one, not at the
    whole study (:class:`~.enqueue.BudgetCounter`), and adds no storage write of its own: the
    ``worker`` attribute rides with the trial's first attribute write (:func:`~.attrs.defer_user_attrs`;
    written at the end of the trial at the latest), and the process's start time is recorded once
    per process (:func:`~.recovery.record_worker`). A worker killed (SIGKILL) between optuna's ask
    and that first write -- while its sampler proposes -- leaves a trial without ``worker``: it is
    failed as an orphan after ``ORPHAN_SECONDS`` instead of at once."""
    _quiet_optuna()
    start = time.monotonic()
    ran = 0
    attempt = _Attempt()
    counter = BudgetCounter()
    recorded = False

    def run_one(trial: optuna.Trial) -> Any:
        attempt.trial_id, attempt.number = trial._trial_id, trial.number
        # written with the trial's first attribute write (one append fewer); at the latest below
        defer_user_attrs(trial, {"worker": worker_id()})
        try:
            return _run_one(trial)
        finally:
            flush_user_attrs(trial)

    def _run_one(trial: optuna.Trial) -> Any:
        if not only_enqueued:
            _check_slot(study, trial, budget, counter)
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
            raise_pending()
            if timeout is not None and time.monotonic() - start >= timeout:
                log.info("search.timeout=%ss reached: this worker stops", timeout)
                break
            recover_stale(study, max_retry)
            if not recorded:  # after the first recovery: a dead worker whose pid this process got is recovered first
                record_worker(study)
                recorded = True
            done, running, waiting = counter.refresh(study)
            if not only_enqueued and any(fixed_point(t) for t in counter.unfinished if t.state == TrialState.WAITING):
                drop_duplicate_waiting(study)
                done, running, waiting = counter.refresh(study)
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
                study.optimize(run_one, n_trials=1, catch=(), gc_after_trial=False)
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
            if on_trial is not None:  # not optuna's callbacks: they get a deep copy of the trial (~1 ms)
                on_trial(study, study._storage.get_trial(attempt.trial_id))
    return ran


def _sleep(seconds: float) -> None:
    with interruptible(True):
        time.sleep(seconds)


def _check_slot(study: optuna.Study, trial: optuna.Trial, budget: int | None, counter: BudgetCounter) -> None:
    """Raise :class:`BudgetTaken` if this trial is beyond the global budget or runs an enqueued
    point that another trial already holds."""
    frozen = study._storage.get_trial(trial._trial_id)
    if fixed_point(frozen) is not None:
        twin = twin_of(study.get_trials(deepcopy=False), frozen)
        if twin is not None:
            trial.set_user_attr("reason", f"duplicate of trial {twin} (enqueued twice)")
            raise BudgetTaken(f"its point is already trial {twin}")
    if budget is None:
        return
    counter.refresh(study)
    if counter.ahead_of(trial.number) < budget:
        return
    trial.set_user_attr("reason", "surplus: the budget was already taken by other workers")
    if fixed_point(frozen) is not None or "failed_trial" in frozen.system_attrs:
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
