"""Tests of nas.report: loading results tables, the Pareto front, plots and report.md, the CLI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from nas.report import (ReportError, compare, leaderboard, load_results, make_report, param_importances,
                        pareto_front, summarize)
from nas.results import TRIAL_COLUMNS, write_table

NAS_REPORT = shutil.which("nas-report") or "nas-report"
NAS_SEARCH = shutil.which("nas-search") or "nas-search"


def _env() -> dict[str, str]:
    # one torch/BLAS thread per process: the suite shares two cores
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}


def run_report(*args: str | os.PathLike) -> subprocess.CompletedProcess:
    return subprocess.run([NAS_REPORT, *map(str, args)], capture_output=True, text=True, env=_env(),
                          timeout=120)


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, tiny nas-search study (4 trials on 256 Fashion-MNIST images): its results folder."""
    root = tmp_path_factory.mktemp("nas_runs")
    cmd = [NAS_SEARCH, "search.n_trials=4", "proxy.train_size=256", "proxy.minival_size=200",
           "proxy.eval_batch_size=200", "proxy.threads=1", "pruner=none", f"results_dir={root}",
           "search.study_name=tiny"]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = root / "tiny"
    assert (folder / "trials.parquet").is_file() and (folder / "best.json").is_file()
    return folder


def grid_frame() -> pd.DataFrame:
    """A scale-search grid: the constrained (alpha, beta, gamma) points plus one-axis scalings."""
    rows = []
    steps = np.round(np.arange(1.0, 1.81, 0.1), 2)
    for a in steps:
        for b in steps:
            for g in steps:
                product = a * b * b * g * g
                if abs(product - 2) <= 0.15:
                    acc = 0.8 - 0.3 * (a - 1.2) ** 2 - 0.4 * (b - 1.1) ** 2 - 0.3 * (g - 1.2) ** 2
                    rows.append(dict(alpha=a, beta=b, gamma=g, product=product, flops_ratio=product * 0.97,
                                     accuracy=acc, params=int(4e6 * a * b * b), flops=int(8.3e6 * product),
                                     resolution=int(round(32 * g)), kind="compound"))
    for kind, col in (("depth", "alpha"), ("width", "beta"), ("resolution", "gamma")):
        coef = {**dict(alpha=1.0, beta=1.0, gamma=1.0), col: 2.0}
        product = coef["alpha"] * coef["beta"] ** 2 * coef["gamma"] ** 2
        rows.append(dict(**coef, product=product, flops_ratio=product, accuracy=None, params=int(4e6),
                         flops=int(8.3e6 * product), resolution=int(round(32 * coef["gamma"])), kind=kind))
    df = pd.DataFrame(rows)
    df["params"] = df["params"].astype("Int64")
    df.loc[len(df) - 1, "params"] = pd.NA  # an integer column with a gap
    df["evaluated"] = df["accuracy"].notna()
    df["finished"] = pd.Timestamp("2026-01-02 03:04:05.123456") + pd.to_timedelta(np.arange(len(df)), "s")
    return df


def family_frame() -> pd.DataFrame:
    rows = []
    for phi in range(8):
        d, w, r = 1.2 ** phi, 1.1 ** phi, int(round(224 * 1.15 ** phi))
        flops = int(390e6 * (1.2 * 1.1 ** 2 * 1.15 ** 2) ** phi)
        rows.append(dict(phi=phi, name=f"B{phi}", depth=d, width=w, resolution=r, dropout=0.2 + 0.05 * phi,
                         params=int(5.3e6 * w * w * d), flops=flops, flops_ratio=flops / 390e6,
                         ratio_vs_2phi=flops / 390e6 / 2 ** phi, arch=f"stem=32 r1_k3_s11_e1_i32_o16 res={r}",
                         accuracy=0.77 + 0.01 * phi if phi < 4 else None))
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def grid_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("scale") / "grid-study"
    write_table(grid_frame(), folder, "grid")
    (folder / "coefficients.yaml").write_text(yaml.safe_dump({"alpha": 1.2, "beta": 1.1, "gamma": 1.2,
                                                              "tol": 0.15}))
    return folder


@pytest.fixture(scope="module")
def family_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("family") / "family-study"
    write_table(family_frame(), folder, "family")
    return folder


def check_pngs(folder: Path, expected: set[str]) -> list[Path]:
    """Every PNG in ``folder`` opens and verifies as an image, and the expected ones are there."""
    pngs = sorted(folder.glob("*.png"))
    assert expected <= {p.name for p in pngs}, (expected, pngs)
    for p in pngs:
        assert p.stat().st_size > 0
        with Image.open(p) as im:
            im.verify()
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] >= 400 and im.size[1] >= 300
            im.load()
    return pngs


def check_markdown(md: Path, pngs: list[Path]) -> str:
    text = md.read_text()
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    for p in pngs:
        assert os.path.relpath(p, md.parent) in linked, (p, linked)
    for rel in linked:  # every embedded plot exists, by a relative path
        assert not os.path.isabs(rel) and (md.parent / rel).is_file(), rel
    return text


def one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr
    assert err.startswith("error: ") and "\n" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


# ------------------------------------------------------------------------------ the real run


def test_report_of_a_real_run(real_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    proc = run_report(real_run, "--out", out, "--top", "3")
    assert proc.returncode == 0, proc.stderr
    best = load_best(real_run)
    for needle in ("Summary", "trials: 4", "Leaderboard (top 3", "Pareto front", best["arch"], str(out / "report.md")):
        assert needle in proc.stdout, needle
    pngs = check_pngs(out, {"history.png", "pareto.png", "importance.png"})
    text = check_markdown(out / "report.md", pngs)
    assert re.search(r"\|\s+rank\s+\|", text) and f"`{best['arch']}`" in text
    assert not list(real_run.glob("*.png")), "with --out nothing is written into the results folder"


def load_best(folder: Path) -> dict:
    import json

    return json.loads((folder / "best.json").read_text())


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


def test_summary_leaderboard_and_importance_of_a_real_run(real_run: Path) -> None:
    df = load_results(real_run)
    best = load_best(real_run)
    s = summarize(df, best)
    assert s["trials"] == 4 and sum(s["states"].values()) == 4 and s["workers"] == 1
    assert s["best"]["trial"] == best["trial"] and s["best"]["reward"] == pytest.approx(best["reward"])
    assert s["best"]["arch"] == best["arch"] and s["target"] == best["T"]
    board = leaderboard(df, top=2)
    assert len(board) <= 2 and board.iloc[0]["number"] == best["trial"]
    imp, note = param_importances(real_run)
    complete = int((df["state"] == "COMPLETE").sum())
    if complete >= 3 and df.loc[df["state"] == "COMPLETE", "reward"].nunique() > 1:
        assert imp is not None, note
        assert imp.sum() == pytest.approx(1.0) and (imp >= 0).all()
        assert set(imp.index) <= {c for c in df.columns if re.match(r"^s\d+_", c)}
        assert "study.journal" in note
    else:
        assert imp is None and note.startswith("skipped")


# ------------------------------------------------------------------------------ Pareto front


def test_pareto_front_known_answer() -> None:
    df = pd.DataFrame({
        "number":   [0,    1,    2,    3,    4,    5,    6,    7,    8,    9,    10],
        "state":    ["COMPLETE"] * 8 + ["PRUNED", "COMPLETE", "COMPLETE"],
        "accuracy": [0.70, 0.80, 0.80, 0.75, 0.90, 0.90, 0.90, 0.60, 0.99, None, 0.70],
        "flops":    [10,   20,   20,   20,   40,   40,   50,   5,    1,    1,    12],
    })
    front = pareto_front(df)
    # 7: cheapest; 0: more accurate; 1 and 2: an exact duplicate pair, both kept; 4 and 5: duplicates
    # 3: same FLOPs as 1/2 but less accurate -> dominated; 6: same accuracy as 4/5, more FLOPs -> dominated
    # 10: same accuracy as 0, more FLOPs -> dominated; 8 PRUNED and 9 without accuracy do not count
    assert front["number"].tolist() == [7, 0, 1, 2, 4, 5]
    assert front.index.tolist() == [7, 0, 1, 2, 4, 5]  # the original index, to match rows back
    assert front["flops"].is_monotonic_increasing


def test_pareto_front_other_columns_and_errors() -> None:
    df = pd.DataFrame({"acc": [0.5, 0.6, 0.4], "params": [3, 3, 1]})  # no state column: all rows count
    assert pareto_front(df, maximize="acc", minimize="params").index.tolist() == [2, 1]
    assert pareto_front(df.iloc[0:0], maximize="acc", minimize="params").empty
    with pytest.raises(ValueError, match="no column 'accuracy'"):
        pareto_front(df)


# -------------------------------------------------------------------------- grid and family


@pytest.mark.parametrize("kind", ["grid", "family"])
def test_stage2_parquet_and_csv_load_the_same(kind: str, grid_folder: Path, family_folder: Path) -> None:
    folder = grid_folder if kind == "grid" else family_folder
    from_parquet = load_results(folder / f"{kind}.parquet")
    from_csv = load_results(folder / f"{kind}.csv")
    pd.testing.assert_frame_equal(from_parquet, from_csv)
    assert from_csv.attrs["kind"] == kind
    assert list(from_csv.columns) == list((grid_frame() if kind == "grid" else family_frame()).columns)
    if kind == "grid":
        assert str(from_csv["params"].dtype) == "Int64" and from_csv["params"].isna().sum() == 1
        assert str(from_csv["flops"].dtype) == "int64" and str(from_csv["alpha"].dtype) == "float64"
        assert str(from_csv["evaluated"].dtype) == "boolean"
        assert str(from_csv["finished"].dtype) == "datetime64[us]"
        assert str(from_csv["kind"].dtype) == "string"
    else:
        assert str(from_csv["phi"].dtype) == "int64" and from_csv["accuracy"].isna().sum() == 4


def test_grid_report(grid_folder: Path, tmp_path: Path) -> None:
    rep = make_report(grid_folder, tmp_path / "g", top=4)
    assert rep.kinds == ["grid"]
    pngs = check_pngs(tmp_path / "g", {"grid_heatmap.png", "grid_scatter.png"})
    text = check_markdown(tmp_path / "g" / "report.md", pngs)
    assert "Chosen coefficients" in text and "alpha: 1.2" in text and "γ = 1.20" in text
    assert text.count("| compound") == int((grid_frame()["kind"] == "compound").sum())  # the whole grid
    assert "more rows in report.md" in rep.text  # the console shows --top rows


def test_grid_with_other_column_names(tmp_path: Path) -> None:
    """The stage-2 tables are read through aliases: acc, measured_ratio, ... work too."""
    df = grid_frame().rename(columns={"accuracy": "acc", "flops_ratio": "measured_ratio", "kind": "scaling"})
    write_table(df, tmp_path / "odd", "grid")
    rep = make_report(tmp_path / "odd", top=3)
    check_pngs(tmp_path / "odd", {"grid_heatmap.png", "grid_scatter.png"})
    assert "accuracy (%)" in rep.markdown and "FLOPs ratio" in rep.markdown


def test_family_report(family_folder: Path, tmp_path: Path) -> None:
    rep = make_report(family_folder, tmp_path / "f")
    pngs = check_pngs(tmp_path / "f", {"family_scaling.png"})
    text = check_markdown(tmp_path / "f" / "report.md", pngs)
    for name in [f"B{i}" for i in range(8)]:
        assert f"| {name} " in text
    assert "FLOPs / (2^φ·B0)" in rep.text


def test_table_fallback_and_comparison(real_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A second study without a journal (e.g. on PostgreSQL): importance from the table; then the
    two side by side, each report written into its own folder and the comparison beside them."""
    from nas.report import main

    tiny = tmp_path / "tiny"
    shutil.copytree(real_run, tiny)
    raw = pd.read_parquet(real_run / "trials.parquet")
    other = pd.concat([raw, raw.assign(number=raw["number"] + len(raw))], ignore_index=True)
    done = other["state"] == "COMPLETE"
    other.loc[done, "reward"] = np.random.default_rng(0).uniform(0.1, 0.9, int(done.sum()))
    folder = tmp_path / "random"
    write_table(other, folder, "trials")
    imp, note = param_importances(folder)
    assert imp is not None and "trials table" in note and imp.sum() == pytest.approx(1.0)

    main([str(tiny), str(folder), "--top", "2"])
    stdout = capsys.readouterr().out
    assert "Comparison: tiny vs random" in stdout and "best reward" in stdout
    for study in (tiny, folder):
        check_markdown(study / "report.md", check_pngs(study, {"history.png", "pareto.png", "importance.png"}))
    check_pngs(tmp_path, {"comparison_history.png"})
    cmp_md = (tmp_path / "comparison.md").read_text()
    assert "(tiny/report.md)" in cmp_md and "(random/report.md)" in cmp_md
    table, _ = compare([tiny, folder], tmp_path / "cmp2", plots=False)
    assert table["study"].tolist() == ["tiny", "random"]
    assert table.loc[1, "best reward"] == f"{other.loc[done, 'reward'].max():.4f}"
    assert table.loc[1, "trials"] == str(len(other))


def test_importance_skipped_with_fewer_than_three_trials(real_run: Path) -> None:
    df = load_results(real_run)
    imp, note = param_importances(df.head(2))  # a frame, no journal: the table is used
    assert imp is None and "at least 3" in note


# ------------------------------------------------------------------------------------ errors


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
    (bad / "table.txt").write_text("x")
    with pytest.raises(ReportError, match="unknown results file type"):
        load_results(bad / "table.txt")
    (bad / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ReportError, match="not a trials, grid or family table"):
        load_results(bad / "other.csv")


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    """Through the installed console script: no traceback, one line, exit status 2."""
    one_line_error(run_report(tmp_path / "nowhere"), "no such file or folder")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "grid.parquet").write_bytes(os.urandom(256))
    one_line_error(run_report(corrupt), "grid.parquet", "not a readable Parquet file")


def test_main_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], real_run: Path) -> None:
    """The same handler in-process (cheaper than a subprocess per case)."""
    from nas.report import main

    def error_of(*argv: str | os.PathLike) -> str:
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in argv])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err, err
        return err

    nested = tmp_path / "results"
    write_table(family_frame(), nested / "fam", "family")
    assert "study folders inside: fam" in error_of(nested)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "grid.csv").write_bytes(b"\xff\xfe\x00garbage\x00\n\x81\x82")
    assert "grid.csv" in error_of(corrupt)
    assert "missing" in error_of(real_run, tmp_path / "missing")  # nothing written for the good one
    assert not (real_run / "report.md").exists()
    assert "given twice" in error_of(real_run, real_run)
    assert "--top" in error_of(real_run, "--top", "0")
