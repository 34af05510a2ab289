"""Hydra entry points ``nas-search`` and ``nas-train``: thin layers over :func:`nas.search.run_search`
and :func:`nas.trainone.run_train` (the shell -- checks, one-line errors, exit codes -- is
:mod:`effnas.cli`)."""

from __future__ import annotations

import sys
from typing import Any

from effnas.cli import run_app
from effnas.study import exit_code

from . import config  # noqa: F401 -- registers the root schemas

__all__ = ["search_main", "train_main", "search_task", "train_task"]


def search_task(cfg: Any) -> int:
    from .search import run_search

    outcome = run_search(cfg)
    best = outcome.best
    counts = ", ".join(f"{n} {s.lower()}" for s, n in outcome.counts.items())
    if outcome.interrupted:
        print(f"nas-search interrupted by {outcome.interrupted}: the running trial was marked FAIL and queued again; "
              f"{counts}; results written to {outcome.folder}", file=sys.stderr, flush=True)
        return exit_code(outcome.interrupted)
    if best is None:
        print(f"nas-search: no trial completed ({counts}); see {outcome.folder / 'trials.csv'}")
        return 1
    print(f"nas-search: study {outcome.study_name}: {counts}")
    print(f"winner (B0): trial {best['trial']}, reward {best['reward']:.4f}, minival accuracy "
          f"{best['accuracy']:.4f}, {best['flops'] / 1e6:.2f}M FLOPs, {best['params'] / 1e6:.3f}M params")
    print(f"  arch: {best['arch']}")
    print(f"  results: {outcome.folder}/trials.parquet, trials.csv, best.json")
    return 0


def train_task(cfg: Any) -> int:
    from .trainone import run_train

    out = run_train(cfg)
    print(f"nas-train: {out['name']}: test accuracy {out['test_accuracy']:.4f} "
          f"(minival {out['minival_accuracy']:.4f}) after {out['epochs']} epochs; saved in {out['folder']}")
    return 0


def search_main(argv: list[str] | None = None) -> None:
    sys.exit(run_app("nas_search", search_task, argv))


def train_main(argv: list[str] | None = None) -> None:
    sys.exit(run_app("nas_train", train_task, argv))


if __name__ == "__main__":  # pragma: no cover
    search_main()
