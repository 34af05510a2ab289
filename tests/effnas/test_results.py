"""Results files: atomic writes, URL redaction, the trials table."""

from __future__ import annotations

import os

import optuna
import pandas as pd
import pytest

from effnas.io import write_table
from effnas.results import TRIAL_COLUMNS, trials_frame
from effnas.secrets import redact_url


def test_redact_url_hides_only_the_password():
    assert redact_url("postgresql://alice:s3cr%40t@db.example:5432/nas") == \
        "postgresql://alice:***@db.example:5432/nas"
    assert redact_url("postgresql://alice@host/db") == "postgresql://alice@host/db"
    assert redact_url("sqlite:///x.db") == "sqlite:///x.db"
    assert redact_url(None) is None


@pytest.mark.parametrize("password", ["p@ss", "pa/ss", "pa:ss@", "@", "a@b/c:d"])
def test_redact_url_hides_all_of_a_password_with_raw_special_characters(password):
    """Unencoded @ / : in a password (a mistake users make) must not leave a piece of it visible."""
    assert redact_url(f"postgresql://alice:{password}@db:5432/nas?sslmode=require") == \
        "postgresql://alice:***@db:5432/nas?sslmode=require"


def test_write_table_is_atomic_and_leaves_no_temp_files(tmp_path):
    df = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    write_table(df, tmp_path, "t")
    write_table(df.assign(a=[3, 4]), tmp_path, "t")
    assert sorted(os.listdir(tmp_path)) == ["t.csv", "t.parquet"]
    assert list(pd.read_parquet(tmp_path / "t.parquet")["a"]) == [3, 4]


def test_failed_write_keeps_the_old_file(tmp_path):
    good = pd.DataFrame({"a": [1]})
    write_table(good, tmp_path, "t")
    before = (tmp_path / "t.parquet").read_bytes()
    with pytest.raises(Exception):
        write_table(pd.DataFrame({"a": [object()]}), tmp_path, "t")  # parquet cannot hold it
    assert (tmp_path / "t.parquet").read_bytes() == before
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_trials_frame_columns_and_dtypes():
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial({"s1_op": "mbconv", "s1_expand": 6})  # both columns have values whatever is sampled
    study.enqueue_trial({"s1_op": "conv"})

    def objective(trial):
        op = trial.suggest_categorical("s1_op", ["mbconv", "conv"])
        if op == "mbconv":
            trial.suggest_categorical("s1_expand", [1, 6])
        trial.set_user_attr("reward", 0.5)
        trial.set_user_attr("flops", 123)
        return 0.5

    study.optimize(objective, n_trials=6)
    df = trials_frame(study.get_trials(), ["s1_op", "s1_expand"])
    assert list(df.columns) == [*TRIAL_COLUMNS, "s1_op", "s1_expand"]
    assert str(df["s1_expand"].dtype) == "Int64" and str(df["s1_op"].dtype) == "string"
    assert str(df["flops"].dtype) == "Int64" and (df["duration_seconds"] >= 0).all()


# ------------------------------------------------------------------------------------------------
# Exporting the trials table


def _tricky_study(storage=None) -> optuna.Study:
    """Finished trials of every state, odd values (a reason with a comma, quotes and a new line,
    a NaN accuracy, a missing choice), a retry, a RUNNING and a WAITING trial."""
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial

    study = optuna.create_study(storage=storage, direction="maximize")
    dist = {"s1_op": CategoricalDistribution(["mbconv", "conv"]), "s1_expand": CategoricalDistribution([1, 6]),
            "s1_se": CategoricalDistribution([0, 0.25])}
    study.add_trial(create_trial(params={"s1_op": "mbconv", "s1_expand": 6, "s1_se": 0.25}, distributions=dist,
                                 value=0.5, user_attrs={"reward": 0.5, "accuracy": 0.75, "flops": 123, "arch": "a",
                                                        "worker": "h:1", "seed": 3}))
    study.add_trial(create_trial(params={"s1_op": "conv", "s1_se": 0}, value=0.25,
                                 distributions={k: dist[k] for k in ("s1_op", "s1_se")},
                                 user_attrs={"reward": 0.25, "accuracy": float("nan"), "train_seconds": 0}))
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"reason": 'diverged: "x", then\nnan'}))
    study.add_trial(create_trial(state=TrialState.PRUNED, params={"s1_op": "conv"},
                                 distributions={"s1_op": dist["s1_op"]}, system_attrs={"failed_trial": 2},
                                 user_attrs={"reason": "pruned, early", "duplicate_of": 0}))
    running = study.ask()
    running.suggest_categorical("s1_op", ["mbconv", "conv"])
    running.set_user_attr("worker", "h:2")
    study.enqueue_trial({"s1_op": "mbconv"}, user_attrs={"retry_of": 1})
    return study


def test_export_writes_the_frame_and_its_csv_and_follows_unfinished_trials(tmp_path):
    from effnas.results import export_study

    study = _tricky_study()
    names = ["s1_op", "s1_expand", "s1_se"]
    for _ in range(2):  # the second export comes from the cached rows
        df = export_study(study, tmp_path, names)
        expected = trials_frame(study.get_trials(), names)
        pd.testing.assert_frame_equal(df, expected)
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "trials.parquet"), expected)
        assert (tmp_path / "trials.csv").read_text() == expected.to_csv(index=False)
    assert df["state"].tolist() == ["COMPLETE", "COMPLETE", "FAIL", "PRUNED", "RUNNING", "WAITING"]
    assert df["retry_of"].tolist()[3:] == [2, pd.NA, 1]
    assert str(df["s1_se"].dtype) == "float64" and str(df["s1_expand"].dtype) == "Int64"

    study.tell(4, 0.125)  # the RUNNING trial finishes after it was exported: the table follows
    df = export_study(study, tmp_path, names)
    assert df.loc[4, "state"] == "COMPLETE" and pd.notna(df.loc[4, "datetime_complete"])
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "trials.parquet"),
                                  trials_frame(study.get_trials(), names))
    assert (tmp_path / "trials.csv").read_text() == trials_frame(study.get_trials(), names).to_csv(index=False)


def test_export_rows_are_cached_per_storage(tmp_path):
    """Two storages number their trials alike: the row of trial id 0 of one is not the other's."""
    from effnas.results import export_study

    a, b = _tricky_study(), optuna.create_study()
    b.optimize(lambda t: t.suggest_categorical("s1_op", ["conv"]) == "conv", n_trials=3)
    for study, folder in ((a, tmp_path / "a"), (b, tmp_path / "b"), (a, tmp_path / "a")):
        df = export_study(study, folder, ["s1_op"])
        pd.testing.assert_frame_equal(df, trials_frame(study.get_trials(), ["s1_op"]))


def test_trials_frame_is_linear():
    """One row per trial at a cost per trial that does not grow with the study (the retry number
    was read through an experimental API wrapper per row, once per export: quadratic in all)."""
    import time

    from optuna.distributions import CategoricalDistribution
    from optuna.trial import create_trial

    names = [f"s{i}_op" for i in range(1, 8)]
    dist = {n: CategoricalDistribution(["mbconv", "conv"]) for n in names}

    def trials(n):
        return [create_trial(params={k: "conv" for k in names}, distributions=dist, value=0.5,
                             user_attrs={"reward": 0.5, "arch": "x" * 200}) for _ in range(n)]

    def seconds(ts):
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            trials_frame(ts, names)
            best = min(best, time.perf_counter() - started)
        return best

    small, large = trials(500), trials(5000)
    assert seconds(large) < 25 * seconds(small)  # 10x the rows: about 10x the time, not 100x


def test_throttle_runs_first_then_at_most_every_interval_and_share():
    import time

    from effnas.results import Throttle

    calls = []
    throttle = Throttle(seconds=0.2, share=0.0)
    assert throttle(calls.append, 1) and not throttle(calls.append, 2)  # the first call runs
    time.sleep(0.25)
    assert throttle(calls.append, 3) and not throttle(calls.append, 4)
    assert throttle(calls.append, 5, force=True)  # on demand
    assert calls == [1, 3, 5]

    slow = Throttle(seconds=0.01, share=0.25)  # a call that takes 0.1 s waits 0.4 s
    assert slow(time.sleep, 0.1)
    time.sleep(0.1)
    assert not slow(time.sleep, 0.1)
    assert slow.next - time.monotonic() > 0.15
