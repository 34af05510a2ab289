"""Opening a study, counting its trials, the global budget and enqueued points (warm starts,
retries, grid points) that must run once however many workers share the study.

The trial budget is global across workers: a worker starts a new trial only while
``COMPLETE + PRUNED + RUNNING < budget``; a trial that finds itself beyond the budget (two workers
raced for the last slot) is failed as ``surplus`` and is not counted.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

__all__ = ["BudgetTaken", "open_study", "trial_counts", "over_budget", "enqueue_once", "drop_duplicate_waiting",
           "twin_of", "fixed_point"]

log = logging.getLogger("effnas")


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


class BudgetTaken(Exception):
    """This trial started after other workers had already taken the whole budget (or its enqueued
    point was already evaluated by another trial): it ends as FAIL and is not counted."""



def over_budget(study: optuna.Study, trial: optuna.Trial, budget: int) -> bool:
    """True if trials started before this one already hold the whole budget (a race lost)."""
    ahead = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                      TrialState.RUNNING)):
        if t.number < trial.number:
            ahead += 1
    return ahead >= budget


def fixed_point(t: optuna.trial.FrozenTrial) -> str | None:
    fixed = t.system_attrs.get("fixed_params")
    return json.dumps(fixed, sort_keys=True, default=str) if fixed else None


def twin_of(trials: list[optuna.trial.FrozenTrial], trial: optuna.trial.FrozenTrial) -> int | None:
    """An earlier trial, not failed, of the same enqueued point (two workers starting together
    can both enqueue a warm-start point: ``skip_if_exists`` is check-then-act)."""
    key = fixed_point(trial)
    if key is None:
        return None
    for t in trials:
        if t.number < trial.number and t.state != TrialState.FAIL and fixed_point(t) == key:
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


def drop_duplicate_waiting(study: optuna.Study) -> None:
    trials = study.get_trials(deepcopy=False)
    for t in trials:
        if t.state != TrialState.WAITING:
            continue
        twin = twin_of(trials, t)
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

