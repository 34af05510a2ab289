"""``nas-report``: read any results folder, print and plot what a reader needs, write ``report.md``;
several folders are also compared side by side.

Every user error -- a bad flag or value, a missing or unreadable folder -- is one line on stderr,
``error: ...`` naming the bad value and what is valid, and exit status 2; never a traceback.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn

from effnas.cli import fail

from .load import ReportError, results_file
from .markdown import compare, make_report, study_labels

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: argparse's message (it names the bad argument) and the usage."""

    def error(self, message: str) -> NoReturn:
        usage = " ".join(self.format_usage().split())
        fail(f"{message} ({usage}; --help for more)")
        raise AssertionError("unreachable")  # fail() raises SystemExit


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="nas-report",
        description="Summarise results folders of nas-search, scale-search and scale-family: tables on the "
                    "console, PNG plots and report.md. Several folders are also compared side by side.")
    p.add_argument("paths", nargs="+", metavar="FOLDER",
                   help="results folder(s), e.g. results/nas-fashion_mnist (or a trials/grid/family file)")
    p.add_argument("--out", metavar="DIR",
                   help="write plots and Markdown here instead of into each folder (one sub-folder per "
                        "study when several are given)")
    p.add_argument("--top", type=_positive_int, default=10, metavar="K",
                   help="leaderboard length, a positive integer (default 10)")
    p.add_argument("--no-plots", action="store_true", help="tables only: skip the PNG plots")
    return p


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        if len(args.paths) == 1:
            rep = make_report(args.paths[0], args.out, top=args.top, plots=not args.no_plots)
            print(rep.text, end="")
            print(f"\nreport: {rep.markdown_path}")
            return
        folders = [Path(p) for p in args.paths]
        for f in folders:  # every path is checked before anything is written
            results_file(f)
        homes = [(f if f.is_dir() else f.parent).resolve() for f in folders]
        twice = sorted({str(h) for h in homes if homes.count(h) > 1})
        if twice:
            raise ReportError(f"the same results folder was given twice: {', '.join(twice)} (give each study once)")
        labels = study_labels([f if f.is_dir() else f.parent for f in folders])
        reports = []
        for f, label in zip(folders, labels):
            out = None if args.out is None else Path(args.out) / label
            reports.append(make_report(f, out, top=args.top, plots=not args.no_plots))
        _, cmp_rep = compare(folders, args.out, plots=not args.no_plots)
        for rep in reports:
            print(rep.text)
        print(cmp_rep.text, end="")
        print("\nreports: " + ", ".join(str(r.markdown_path) for r in reports)
              + f"\ncomparison: {cmp_rep.markdown_path}")
    except (ValueError, OSError) as exc:  # ReportError is a ValueError
        fail(str(exc))


if __name__ == "__main__":  # pragma: no cover
    main()
