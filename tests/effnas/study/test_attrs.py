"""A trial's attributes are written in one journal append, rewrites of an unchanged value are
skipped, and a refused write (the trial was finished by another worker) is reported once."""

from __future__ import annotations

import optuna
import pytest
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from effnas.study import attrs as attrs_module
from effnas.study.attrs import defer_user_attrs, flush_user_attrs, journal_batches, set_user_attrs


class CountingBackend(JournalFileBackend):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.appends: list[int] = []

    def append_logs(self, logs):
        self.appends.append(len(logs))
        super().append_logs(logs)


def _journal(tmp_path):
    backend = CountingBackend(str(tmp_path / "study.journal"))
    return backend, optuna.create_study(study_name="s", storage=JournalStorage(backend))


def test_several_attributes_are_one_append_and_every_reader_sees_them(tmp_path):
    backend, study = _journal(tmp_path)
    trial = study.ask()
    before = len(backend.appends)
    attrs = {"arch": "a b c", "flops": 123, "params": 45, "seed": 7, "resolution": 32}
    set_user_attrs(trial, attrs)
    assert backend.appends[before:] == [5]  # five records, one locked and fsync'd append
    assert study._storage.get_trial(trial._trial_id).user_attrs == attrs
    assert trial.user_attrs == attrs  # the trial's own view, as after set_user_attr
    other = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(tmp_path / "study.journal"))))
    assert other.trials[0].user_attrs == attrs
    assert list(other.trials[0].user_attrs) == list(attrs)  # in order


def test_a_value_already_written_is_not_written_again(tmp_path):
    backend, study = _journal(tmp_path)
    trial = study.ask()
    set_user_attrs(trial, {"epochs": 1, "accuracy": 0.5})
    before = len(backend.appends)
    set_user_attrs(trial, {"epochs": 1, "accuracy": 0.5})  # the last epoch's report, again at the end
    assert backend.appends[before:] == []
    set_user_attrs(trial, {"epochs": 1, "accuracy": 0.5, "reward": 0.4})
    assert backend.appends[before:] == [1]
    set_user_attrs(trial, {"epochs": 1.0})  # equal but another type: written
    assert backend.appends[before:] == [1, 1]
    assert study._storage.get_trial(trial._trial_id).user_attrs == {"epochs": 1.0, "accuracy": 0.5, "reward": 0.4}


def test_a_trial_finished_by_another_worker_refuses_the_write_once(tmp_path):
    backend, study = _journal(tmp_path)
    trial = study.ask()
    other = JournalStorage(JournalFileBackend(str(tmp_path / "study.journal")))
    other.set_trial_user_attr(trial._trial_id, "reason", "stale")
    other.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # another worker failed it
    with pytest.raises(UpdateFinishedTrialError):
        set_user_attrs(trial, {"accuracy": 0.5, "reward": 0.4, "epochs": 1})
    # every refused record was replayed: the next storage calls of this worker do not raise
    assert study._storage.get_trial(trial._trial_id).user_attrs == {"reason": "stale"}
    nxt = study.ask()
    set_user_attrs(nxt, {"a": 1, "b": 2})
    assert study._storage.get_trial(nxt._trial_id).user_attrs == {"a": 1, "b": 2}


def test_this_optunas_journal_has_what_the_one_append_needs(tmp_path):
    """A canary: if an Optuna upgrade drops the private parts the one-append write uses, this fails
    (the tool itself then falls back to one public write per attribute, next test)."""
    _, study = _journal(tmp_path)
    assert journal_batches(study._storage)


def test_without_those_parts_each_attribute_is_one_public_write(tmp_path, monkeypatch):
    class Bare:  # a storage object without the private parts
        pass

    assert not journal_batches(Bare())
    backend, study = _journal(tmp_path)
    monkeypatch.setitem(attrs_module._BATCHES, JournalStorage, False)  # as on such an Optuna
    trial = study.ask()
    before = len(backend.appends)
    attrs = {"arch": "a b c", "flops": 123, "seed": 7}
    set_user_attrs(trial, attrs)
    assert backend.appends[before:] == [1, 1, 1]
    assert study._storage.get_trial(trial._trial_id).user_attrs == attrs


def test_a_database_storage_gets_one_write_per_attribute(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'db.sqlite'}")
    trial = study.ask()
    set_user_attrs(trial, {"a": 1, "b": [1, 2]})
    set_user_attrs(trial, {"a": 1})
    assert study._storage.get_trial(trial._trial_id).user_attrs == {"a": 1, "b": [1, 2]}


def test_deferred_attributes_ride_with_the_next_write(tmp_path):
    backend, study = _journal(tmp_path)
    trial = study.ask()
    before = len(backend.appends)
    defer_user_attrs(trial, {"worker": "host:1"})
    assert backend.appends[before:] == [] and trial.user_attrs == {}
    assert study._storage.get_trial(trial._trial_id).user_attrs == {}  # not written yet
    set_user_attrs(trial, {"arch": "a", "flops": 1})
    assert backend.appends[before:] == [3]
    assert list(study._storage.get_trial(trial._trial_id).user_attrs.items()) == [
        ("worker", "host:1"), ("arch", "a"), ("flops", 1)]
    flush_user_attrs(trial)  # nothing left pending: no write
    assert backend.appends[before:] == [3]


def test_flush_writes_what_is_pending_and_drops_it_for_a_finished_trial(tmp_path):
    backend, study = _journal(tmp_path)
    trial = study.ask()
    defer_user_attrs(trial, {"worker": "host:1"})
    flush_user_attrs(trial)
    assert study._storage.get_trial(trial._trial_id).user_attrs == {"worker": "host:1"}
    done = study.ask()
    defer_user_attrs(done, {"worker": "host:2"})
    JournalStorage(JournalFileBackend(str(tmp_path / "study.journal"))).set_trial_state_values(
        done._trial_id, TrialState.FAIL)  # another worker failed it meanwhile
    flush_user_attrs(done)  # no error
    assert study._storage.get_trial(done._trial_id).user_attrs == {}


def test_the_last_report_is_in_the_same_append_as_the_result(tmp_path):
    backend, study = _journal(tmp_path)
    trial = study.ask()
    trial.report(0.3, 1)
    before = len(backend.appends)
    set_user_attrs(trial, {"accuracy": 0.5, "reward": 0.4}, report=(2, 0.45))
    assert backend.appends[before:] == [3]
    assert trial._cached_frozen_trial.intermediate_values == {1: 0.3, 2: 0.45}
    other = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(tmp_path / "study.journal"))))
    assert other.trials[0].intermediate_values == {1: 0.3, 2: 0.45}
    assert other.trials[0].user_attrs == {"accuracy": 0.5, "reward": 0.4}
    # a step already reported: Optuna's own report (its warning; the first value stays)
    with pytest.warns(UserWarning, match="already reported"):
        set_user_attrs(trial, {"epochs": 2}, report=(2, 0.9))
    assert study._storage.get_trial(trial._trial_id).intermediate_values == {1: 0.3, 2: 0.45}
    assert study._storage.get_trial(trial._trial_id).user_attrs["epochs"] == 2


def test_a_database_storage_gets_the_report_and_deferred_attributes_too(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'db.sqlite'}")
    trial = study.ask()
    defer_user_attrs(trial, {"worker": "w"})
    set_user_attrs(trial, {"a": 1}, report=(1, 0.5))
    frozen = study._storage.get_trial(trial._trial_id)
    assert frozen.user_attrs == {"worker": "w", "a": 1} and frozen.intermediate_values == {1: 0.5}
