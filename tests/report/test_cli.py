"""report.cli: ``nas-report`` end to end, and every user error as one line on stderr, exit 2."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from effnas.io import write_table
from report import main


def test_report_of_a_real_run(real_run: Path, tmp_path: Path, best_of, report_process, check_pngs,
                              check_markdown) -> None:
    out = tmp_path / "rep"
    proc = report_process(real_run, "--out", out, "--top", "3")
    assert proc.returncode == 0, proc.stderr
    best = best_of(real_run)
    for needle in ("Summary", "trials: 4", "Leaderboard (top 3", "Pareto front", best["arch"], str(out / "report.md")):
        assert needle in proc.stdout, needle
    pngs = check_pngs(out, {"history.png", "pareto.png", "importance.png"})
    text = check_markdown(out / "report.md", pngs)
    assert re.search(r"\|\s+rank\s+\|", text) and f"`{best['arch']}`" in text
    assert not list(real_run.glob("*.png")), "with --out nothing is written into the results folder"


def test_cli_errors_are_one_line(tmp_path: Path, report_process, one_line_error) -> None:
    """In a fresh process: no traceback, one line, exit status 2."""
    one_line_error(report_process(tmp_path / "nowhere"), "nowhere", "no such file or folder",
                   "expected a results folder")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "grid.parquet").write_bytes(os.urandom(256))
    one_line_error(report_process(corrupt), "grid.parquet", "not a readable Parquet file")
    one_line_error(report_process(tmp_path, "--bogus"), "unrecognized arguments: --bogus", "usage: nas-report",
                   "--top K")


def test_help_prints_usage_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: nas-report") and "--top K" in out and "--no-plots" in out


def test_main_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], real_run: Path,
                                  frames: dict) -> None:
    """The same handlers in-process (cheaper than a subprocess per case)."""

    def error_of(*argv: str | os.PathLike) -> str:
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in argv])
        assert exc.value.code == 2
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert err.startswith("error: ") and "\n" not in err and "Traceback" not in captured.err, err
        return err

    nested = tmp_path / "results"
    write_table(frames["family"](), nested / "fam", "family")
    assert "study folders inside: fam" in error_of(nested)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "grid.csv").write_bytes(b"\xff\xfe\x00garbage\x00\n\x81\x82")
    assert "grid.csv" in error_of(corrupt)
    assert "missing" in error_of(real_run, tmp_path / "missing")  # nothing written for the good one
    assert not (real_run / "report.md").exists()
    assert "given twice" in error_of(real_run, real_run)
    # argparse's errors: one line naming the bad value, with the usage (what is valid)
    for argv, needles in [((real_run, "--top", "0"), ("--top", "positive integer", "'0'")),
                          ((real_run, "--top", "x"), ("--top", "positive integer", "'x'")),
                          ((real_run, "--top", "-3"), ("--top",)),
                          ((real_run, "--top"), ("--top", "expected one argument")),
                          ((real_run, "--bogus"), ("unrecognized arguments: --bogus",)),
                          ((), ("required: FOLDER",))]:
        err = error_of(*argv)
        for needle in (*needles, "usage: nas-report [-h] [--out DIR] [--top K] [--no-plots] FOLDER"):
            assert needle in err, (argv, needle, err)
