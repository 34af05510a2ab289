"""report.load: finding results tables and reading them with the writers' schema, the same frame
from Parquet and CSV."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from effnas.io import write_table
from effnas.results import TABLES, TRIAL_COLUMNS, TRIALS
from report import ReportError, find_results, load_results


def test_trials_parquet_and_csv_load_the_same(real_run: Path) -> None:
    from_parquet = load_results(real_run / "trials.parquet")
    from_csv = load_results(real_run / "trials.csv")
    pd.testing.assert_frame_equal(from_parquet, from_csv)
    pd.testing.assert_frame_equal(load_results(real_run), from_parquet)  # a folder: trials.parquet
    for col, dtype in TRIAL_COLUMNS.items():
        assert str(from_csv[col].dtype) == dtype, col
    choices = [c for c in from_csv.columns if re.match(r"^s\d+_", c)]
    assert len(choices) == 49
    for c in choices:
        dtype = from_csv[c].dtype
        assert isinstance(dtype, pd.CategoricalDtype), c
        assert list(dtype.categories) == sorted(dtype.categories)
    assert set(from_csv["s1_op"].cat.categories) <= {"mbconv", "conv", "ds"}
    assert from_csv.attrs["kind"] == "trials"


def test_stage_choices_are_typed_by_their_values(tmp_path: Path) -> None:
    """Whole numbers are integer categories even when stored as floats (6.0); fractions stay floats;
    words are strings; a choice not made (conditional) is a missing value, not a category."""
    rows = [dict(number=i, state="COMPLETE", reward=0.5, s1_op=op, s1_expand=e, s1_se=se)
            for i, (op, e, se) in enumerate([("mbconv", 6.0, 0.25), ("conv", None, 0.0), ("mbconv", 1.0, 0.0)])]
    write_table(TRIALS.frame(rows, ["s1_op", "s1_expand", "s1_se"]), tmp_path, "trials")
    for file in ("trials.parquet", "trials.csv"):
        df = load_results(tmp_path / file)
        assert list(df["s1_expand"].cat.categories) == [1, 6] and df["s1_expand"].cat.categories.dtype == "int64"
        assert df["s1_expand"].isna().tolist() == [False, True, False]
        assert list(df["s1_se"].cat.categories) == [0.0, 0.25] and df["s1_se"].cat.categories.dtype == "float64"
        assert list(df["s1_op"].cat.categories) == ["conv", "mbconv"]


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@pytest.mark.parametrize("kind", ["trials", "grid", "family"])
def test_each_table_loads_through_its_schema(kind: str, fmt: str, real_run: Path, grid_folder: Path,
                                             family_folder: Path) -> None:
    """Every schema column is there, first and in order, with the schema's dtype."""
    folder = {"trials": real_run, "grid": grid_folder, "family": family_folder}[kind]
    df = load_results(folder / f"{kind}.{fmt}")
    schema = TABLES[kind]
    assert df.attrs["kind"] == kind and df.attrs["source"] == str(folder / f"{kind}.{fmt}")
    assert list(df.columns[:len(schema.columns)]) == list(schema.columns)
    assert {col: str(df[col].dtype) for col in schema.columns} == dict(schema.columns)


@pytest.mark.parametrize("kind", ["trials", "grid", "family"])
def test_columns_a_file_lacks_come_back_as_nulls(kind: str, tmp_path: Path) -> None:
    """An older file with fewer columns stays readable: the schema's other columns are nulls
    (an ``int64`` column as ``Int64``: it has gaps); the file's own extra column follows them."""
    schema = TABLES[kind]
    have = {"trials": dict(number=[0, 1], state=["COMPLETE", "FAIL"], reward=[0.5, None]),
            "grid": dict(alpha=[1.2, 1.1], beta=[1.1, 1.2], gamma=[1.15, 1.1], accuracy=[0.7, 0.71]),
            "family": dict(name=["b0", "b1"], phi=[0, 1], flops=[390, 700])}[kind]
    write_table(pd.DataFrame({**have, "note": ["x", "y"]}), tmp_path, kind)
    for fmt in ("parquet", "csv"):
        df = load_results(tmp_path / f"{kind}.{fmt}")
        assert list(df.columns) == [*schema.columns, "note"]
        for col, dtype in schema.columns.items():
            if col in have:
                assert str(df[col].dtype) == dtype, col
            else:
                assert df[col].isna().all() and str(df[col].dtype) == (dtype if dtype != "int64" else "Int64"), col
        assert df["note"].tolist() == ["x", "y"]


@pytest.mark.parametrize("kind", ["grid", "family"])
def test_stage2_parquet_and_csv_load_the_same(kind: str, grid_folder: Path, family_folder: Path,
                                              frames: dict) -> None:
    folder = grid_folder if kind == "grid" else family_folder
    from_parquet = load_results(folder / f"{kind}.parquet")
    from_csv = load_results(folder / f"{kind}.csv")
    pd.testing.assert_frame_equal(from_parquet, from_csv)
    assert from_csv.attrs["kind"] == kind
    assert list(from_csv.columns) == list(frames[kind]().columns)
    if kind == "grid":
        assert list(from_csv.columns[-2:]) == ["evaluated", "finished"]  # after the schema's columns
        assert str(from_csv["params"].dtype) == "Int64" and from_csv["params"].isna().sum() == 1
        assert str(from_csv["flops"].dtype) == "Int64" and str(from_csv["alpha"].dtype) == "float64"
        assert str(from_csv["evaluated"].dtype) == "boolean"
        assert str(from_csv["finished"].dtype) == "datetime64[us]"
        assert str(from_csv["kind"].dtype) == "string"
    else:
        assert str(from_csv["phi"].dtype) == "int64" and from_csv["accuracy"].isna().sum() == 4
        assert "ratio_vs_2phi" in from_csv.columns and "flops_vs_ideal" not in from_csv.columns


def test_kind_from_the_columns_when_the_name_does_not_say(tmp_path: Path, grid_folder: Path,
                                                          family_folder: Path) -> None:
    """A grid has number and state too: alpha, beta and gamma make it a grid, not trials."""
    (tmp_path / "points.csv").write_text((grid_folder / "grid.csv").read_text())
    (tmp_path / "models.csv").write_text((family_folder / "family.csv").read_text())
    assert load_results(tmp_path / "points.csv").attrs["kind"] == "grid"
    assert load_results(tmp_path / "models.csv").attrs["kind"] == "family"


def test_find_results_prefers_parquet(real_run: Path, tmp_path: Path) -> None:
    assert find_results(real_run) == {"trials": real_run / "trials.parquet"}
    write_table(pd.DataFrame({"name": ["b0"], "phi": [0]}), tmp_path, "family")
    (tmp_path / "family.parquet").unlink()
    assert find_results(tmp_path) == {"family": tmp_path / "family.csv"}


def test_load_results_errors(tmp_path: Path, real_run: Path) -> None:
    with pytest.raises(ReportError, match="no such file or folder"):
        load_results(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no results files"):
        load_results(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "trials.parquet").write_bytes(b"PAR1 this is not parquet at all")
    with pytest.raises(ReportError, match="not a readable Parquet file"):
        load_results(bad)
    (bad / "trials.csv").write_bytes(b"")
    with pytest.raises(ReportError, match="empty CSV"):
        load_results(bad / "trials.csv")
    (bad / "trials.csv").write_text("number,state\n0,COMPLETE,1,2,3\n")
    with pytest.raises(ReportError, match="not a readable CSV"):
        load_results(bad / "trials.csv")
    text = (real_run / "trials.csv").read_text().splitlines()
    (bad / "trials.csv").write_text("\n".join([text[0], "zero" + text[1][1:], *text[2:]]) + "\n")
    with pytest.raises(ReportError, match="column 'number'"):
        load_results(bad / "trials.csv")
    (bad / "trials.csv").write_text("number,state,flops\n0,COMPLETE,1.5\n")
    with pytest.raises(ReportError, match="column 'flops' does not hold Int64 values"):
        load_results(bad / "trials.csv")  # not silently truncated to 1
    (bad / "trials.csv").write_text("number,state,datetime_start\n0,COMPLETE,yesterday\n")
    with pytest.raises(ReportError, match="column 'datetime_start'"):
        load_results(bad / "trials.csv")
    (bad / "table.txt").write_text("x")
    with pytest.raises(ReportError, match="unknown results file type"):
        load_results(bad / "table.txt")
    (bad / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ReportError, match="not a trials, grid or family table"):
        load_results(bad / "other.csv")
