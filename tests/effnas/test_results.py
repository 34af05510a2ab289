"""Results files: atomic writes, URL redaction, the trials table."""

from __future__ import annotations

import os

import optuna
import pandas as pd
import pytest

from effnas.io import write_json, write_table
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
    study = optuna.create_study(direction="maximize")

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
