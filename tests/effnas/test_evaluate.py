"""The evaluator's duplicate check: which earlier trial a new one would repeat, kept incrementally
(finished trials are indexed once) with the same answers as a scan of the whole study; and what
becomes of a failed trial's checkpoint."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState, create_trial

from effnas import evaluate
from effnas.evaluate import Evaluator
from effnas.objective import Reward
from effnas.train import CheckpointError, ProxyConfig
from search_space import reference_spec
from effnas.study.enqueue import DUPLICATE

DIST = {"x": optuna.distributions.CategoricalDistribution(["a", "b", "c", "d", "e", "f", "g"])}


def _add(study: optuna.Study, arch: str, state: TrialState, **attrs) -> int:
    study.add_trial(create_trial(state=state, params={"x": arch}, distributions=DIST,
                                 value=0.5 if state == TrialState.COMPLETE else None,
                                 user_attrs={"arch": arch, **attrs}))
    return study.trials[-1].number


def _scan(study: optuna.Study, trial: optuna.Trial, arch: str) -> int | None:
    """The rule, by a full scan: the lowest finished twin (not failed, not itself a duplicate),
    else the lowest live one numbered below the trial."""
    trials = [t for t in study.get_trials() if t.number != trial.number and t.state != TrialState.FAIL
              and t.user_attrs.get(DUPLICATE) is None and t.user_attrs.get("arch") == arch]
    finished = [t.number for t in trials if t.state.is_finished()]
    live = [t.number for t in trials if not t.state.is_finished() and t.number < trial.number]
    return min(finished) if finished else min(live) if live else None


def test_twins_found_incrementally_match_a_full_scan():
    study = optuna.create_study(direction="maximize")
    ev = Evaluator(None, None, None, max_flops=None, max_params=None, seed=0, dedupe=True)
    _add(study, "a", TrialState.COMPLETE)
    _add(study, "a", TrialState.COMPLETE)                   # a later finished twin: the lower one is named
    _add(study, "b", TrialState.FAIL)                       # failed: not a twin
    _add(study, "c", TrialState.COMPLETE, **{DUPLICATE: 0})  # a recorded duplicate: not a twin
    _add(study, "d", TrialState.RUNNING)                    # live, numbered below the asking trial
    _add(study, "e", TrialState.PRUNED)
    trial = study.ask()
    for arch in "abcdefg":
        got = ev._twin(trial, arch)
        assert (got.number if got else None) == _scan(study, trial, arch), arch
    assert ev._twin(trial, "a").number == 0 and ev._twin(trial, "d").number == 4
    assert ev._twin(trial, "b") is None and ev._twin(trial, "c") is None

    # trials that finish or appear after the first check are seen by the next one
    _add(study, "f", TrialState.COMPLETE)
    _add(study, "g", TrialState.RUNNING)                    # numbered above the asking trial: not a twin
    later = study.ask()
    study.tell(later, state=TrialState.FAIL)
    for arch in "abcdefg":
        got = ev._twin(trial, arch)
        assert (got.number if got else None) == _scan(study, trial, arch), arch
    assert ev._twin(trial, "f").number == 7 and ev._twin(trial, "g") is None


def test_a_waiting_point_is_a_twin_through_arch_of():
    """An enqueued point has no recorded architecture yet: ``arch_of`` makes one from its params."""
    study = optuna.create_study(direction="maximize")
    study.add_trial(create_trial(state=TrialState.WAITING, params={"x": "b"}, distributions=DIST))
    study.add_trial(create_trial(state=TrialState.RUNNING, params={}, distributions={}))
    asking = optuna.Trial(study, study.trials[1]._trial_id)
    with_arch_of = Evaluator(None, None, None, max_flops=None, max_params=None, seed=0, dedupe=True,
                             arch_of=lambda params: params.get("x"))
    assert with_arch_of._twin(asking, "b").number == 0
    assert with_arch_of._twin(asking, "a") is None
    without = Evaluator(None, None, None, max_flops=None, max_params=None, seed=0, dedupe=True)
    assert without._twin(asking, "b") is None


class _Broken(RuntimeError):
    pass


def _failing_trainer(error: Exception):
    """A training that saves its first epoch where it was told, then fails with ``error``."""
    def trainer(spec, data, cfg, on_epoch, progress=None, checkpoint=None):
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.write_bytes(b"epoch 1")
        raise error
    return trainer


@pytest.mark.parametrize("error, kept", [(_Broken("out of memory"), False),                 # never retried
                                         (CheckpointError("not this training's"), True),  # the user's file
                                         (UpdateFinishedTrialError("failed as stale"), True)])  # its retry resumes
def test_a_failed_trials_checkpoint_is_dropped_unless_something_resumes_it(monkeypatch, tmp_path, error, kept):
    monkeypatch.setattr(evaluate, "train_and_evaluate", _failing_trainer(error))
    ev = Evaluator(SimpleNamespace(train=[None] * 8), ProxyConfig(epochs=3, threads=1), Reward(target=1e6),
                   max_flops=None, max_params=None, seed=0, checkpoints=tmp_path / "checkpoints")
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    with pytest.raises(type(error)):
        ev.run(trial, reference_spec("efficientnet-b0", num_classes=10, in_channels=1))
    assert [p.read_bytes() for p in (tmp_path / "checkpoints").glob("trial-*.pt")] == ([b"epoch 1"] if kept else [])
