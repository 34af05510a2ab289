"""Recording a running trial's user attributes: several in one storage write, and no second write
of a value already recorded.

Each ``trial.set_user_attr`` is one storage operation -- on the default journal file, one locked,
fsync'd append (~0.6 ms on these machines). A trial of ``nas-search`` records about ten attributes
(what the result tables show); one at a time they were most of the study loop's overhead over a
plain Optuna loop (``bench/overhead.py``). Optuna's journal replays one attribute per record (it
asserts so), but its file backend appends a *list* of records under one lock and one fsync:
:func:`set_user_attrs` writes the records of several attributes in one such append, then replays
them as Optuna's own ``set_trial_user_attr`` does. That append uses private parts of Optuna's
journal storage; where an Optuna lacks them (:func:`journal_batches`), and on other storages
(PostgreSQL, SQLite), each attribute is one public ``set_trial_user_attr``.

Two more writes of every trial ride along: the ``worker`` attribute is *deferred*
(:func:`defer_user_attrs`) into the trial's first write, and the last epoch's intermediate value
(``report``) goes into the same append as the result -- two fewer fsync'd appends a trial."""

from __future__ import annotations

import weakref
from typing import Any, Mapping

import optuna
from optuna.exceptions import UpdateFinishedTrialError

__all__ = ["set_user_attrs", "defer_user_attrs", "flush_user_attrs", "journal_batches"]

# per running trial object: what this process wrote (the trial's attributes are written by its own
# worker only; a worker that fails it as stale writes ``reason``, which refuses every later write)
_WRITTEN: "weakref.WeakKeyDictionary[optuna.Trial, dict[str, Any]]" = weakref.WeakKeyDictionary()
# per running trial object: attributes to write with its next write (defer_user_attrs)
_PENDING: "weakref.WeakKeyDictionary[optuna.Trial, dict[str, Any]]" = weakref.WeakKeyDictionary()


def defer_user_attrs(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    """Write ``attrs`` with the next :func:`set_user_attrs` of ``trial`` (first, in order), or at
    :func:`flush_user_attrs` -- whichever comes first. Until then nothing shows them, not even
    ``trial.user_attrs`` (its dict may be the storage's own view of the trial)."""
    _PENDING.setdefault(trial, {}).update(attrs)


def flush_user_attrs(trial: optuna.Trial) -> None:
    """Write what :func:`defer_user_attrs` left pending for ``trial``, if anything; a trial finished
    meanwhile (by another worker) drops it silently."""
    if _PENDING.get(trial):
        try:
            set_user_attrs(trial, {})
        except UpdateFinishedTrialError:
            pass


def set_user_attrs(trial: optuna.Trial, attrs: Mapping[str, Any], *,
                   report: tuple[int, float] | None = None) -> None:
    """Set ``attrs`` on ``trial`` like ``trial.set_user_attr`` for each, in order, skipping those whose
    value this process already wrote (equal and of the same type) -- in one storage write on a
    journal storage, together with the deferred ones (:func:`defer_user_attrs`) and ``report``
    (``(step, value)``: ``trial.report(value, step)``; its record after the attributes). Raises
    ``UpdateFinishedTrialError`` when the trial is finished (after every record is replayed, so
    that no later storage call raises it again)."""
    written = _WRITTEN.setdefault(trial, {})
    attrs = {**_PENDING.pop(trial, {}), **attrs}
    todo = {key: value for key, value in attrs.items()
            if not (key in written and type(written[key]) is type(value) and written[key] == value)}
    if not todo and report is None:
        return
    storage, frozen = trial.storage, trial._cached_frozen_trial
    # one append on a journal; a step already reported goes through Optuna's own report (its warning)
    batch = isinstance(storage, optuna.storages.JournalStorage) and len(todo) + (report is not None) > 1 \
        and (report is None or report[0] not in frozen.intermediate_values) and journal_batches(storage)
    step_value = (report[0], float(report[1])) if batch and report is not None else None
    if batch:
        _journal_write(storage, trial._trial_id, todo, step_value)
    else:
        for key, value in todo.items():
            storage.set_trial_user_attr(trial._trial_id, key, value)
    written.update(todo)
    frozen.user_attrs.update(todo)  # what ``trial.user_attrs`` shows, as set_user_attr does
    if step_value is not None:
        frozen.intermediate_values[step_value[0]] = step_value[1]
    elif report is not None:
        trial.report(report[1], report[0])


def journal_batches(storage: optuna.storages.JournalStorage) -> bool:
    """Whether this Optuna's journal storage has the private parts :func:`_journal_write` uses
    (checked once per storage class). Where a later Optuna lacks them, every attribute is written
    with the public ``set_trial_user_attr`` instead: slower, never wrong."""
    kind = type(storage)
    if kind not in _BATCHES:
        try:
            from optuna.storages.journal._storage import JournalOperation
            ok = all(hasattr(JournalOperation, op) for op in ("SET_TRIAL_USER_ATTR", "SET_TRIAL_INTERMEDIATE_VALUE"))
        except ImportError:
            ok = False
        ok = ok and all(hasattr(storage, a) for a in ("_thread_lock", "_replay_result", "_backend",
                                                        "_sync_with_backend")) \
            and hasattr(storage._replay_result, "worker_id") and hasattr(storage._backend, "append_logs")
        _BATCHES[kind] = ok
    return _BATCHES[kind]


_BATCHES: dict[type, bool] = {}


def _journal_write(storage: optuna.storages.JournalStorage, trial_id: int, attrs: Mapping[str, Any],
                   report: tuple[int, float] | None = None) -> None:
    """What ``JournalStorage.set_trial_user_attr`` does for one attribute, for several in one append
    (and ``set_trial_intermediate_value`` for ``report``)."""
    from optuna.storages.journal._storage import JournalOperation

    with storage._thread_lock:
        worker = storage._replay_result.worker_id
        logs = [{"op_code": JournalOperation.SET_TRIAL_USER_ATTR, "worker_id": worker, "trial_id": trial_id,
                 "user_attr": {key: value}} for key, value in attrs.items()]
        if report is not None:
            logs.append({"op_code": JournalOperation.SET_TRIAL_INTERMEDIATE_VALUE, "worker_id": worker,
                         "trial_id": trial_id, "step": report[0], "intermediate_value": report[1]})
        storage._backend.append_logs(logs)
        # Replaying stops at the first record refused (the trial was finished meanwhile); go on
        # until every record is read, then report the refusal once, as a single write would.
        refused: UpdateFinishedTrialError | None = None
        while True:
            try:
                storage._sync_with_backend()
                break
            except UpdateFinishedTrialError as exc:
                refused = refused or exc
        if refused is not None:
            raise refused
