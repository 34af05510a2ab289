"""Recording a running trial's user attributes: several in one storage write, and no second write
of a value already recorded.

Each ``trial.set_user_attr`` is one storage operation -- on the default journal file, one locked,
fsync'd append (~0.6 ms on these machines). A trial of ``nas-search`` records about ten attributes
(what the result tables show); one at a time they were most of the study loop's overhead over a
plain Optuna loop (``bench/overhead.py``). Optuna's journal replays one attribute per record (it
asserts so), but its file backend appends a *list* of records under one lock and one fsync:
:func:`set_user_attrs` writes the records of several attributes in one such append, then replays
them as Optuna's own ``set_trial_user_attr`` does. Other storages (PostgreSQL, SQLite) get one
``set_trial_user_attr`` per attribute, as before."""

from __future__ import annotations

import weakref
from typing import Any, Mapping

import optuna
from optuna.exceptions import UpdateFinishedTrialError

__all__ = ["set_user_attrs"]

# per running trial object: what this process wrote (the trial's attributes are written by its own
# worker only; a worker that fails it as stale writes ``reason``, which refuses every later write)
_WRITTEN: "weakref.WeakKeyDictionary[optuna.Trial, dict[str, Any]]" = weakref.WeakKeyDictionary()


def set_user_attrs(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    """Set ``attrs`` on ``trial`` like ``trial.set_user_attr`` for each, in order, skipping those whose
    value this process already wrote (equal and of the same type) -- in one storage write on a
    journal storage. Raises ``UpdateFinishedTrialError`` when the trial is finished (after every
    record is replayed, so that no later storage call raises it again)."""
    written = _WRITTEN.setdefault(trial, {})
    todo = {key: value for key, value in attrs.items()
            if not (key in written and type(written[key]) is type(value) and written[key] == value)}
    if not todo:
        return
    storage = trial.storage
    if isinstance(storage, optuna.storages.JournalStorage) and len(todo) > 1:
        _journal_write(storage, trial._trial_id, todo)
    else:
        for key, value in todo.items():
            storage.set_trial_user_attr(trial._trial_id, key, value)
    written.update(todo)
    trial._cached_frozen_trial.user_attrs.update(todo)  # what ``trial.user_attrs`` shows, as set_user_attr does


def _journal_write(storage: optuna.storages.JournalStorage, trial_id: int, attrs: Mapping[str, Any]) -> None:
    """What ``JournalStorage.set_trial_user_attr`` does for one attribute, for several in one append."""
    from optuna.storages.journal._storage import JournalOperation

    with storage._thread_lock:
        worker = storage._replay_result.worker_id
        storage._backend.append_logs([
            {"op_code": JournalOperation.SET_TRIAL_USER_ATTR, "worker_id": worker, "trial_id": trial_id,
             "user_attr": {key: value}} for key, value in attrs.items()])
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
