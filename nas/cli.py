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
    rr = best.get("rerank") or {}
    if best.get("selected_by") == "rerank":
        row = next(c for c in rr["candidates"] if c["trial"] == best["trial"])
        sd = f" ± {row['reward_sd']:.4f}" if row["reward_sd"] is not None else ""
        print(f"  chosen by re-evaluation of the top {len(rr['candidates'])}: mean reward {row['reward_mean']:.4f}{sd}, "
              f"accuracy {row['accuracy_mean']:.4f} over {row['seeds_done']} seeds"
              f"{' (the proxy winner was trial ' + str(rr['proxy_winner']) + ')' if rr.get('changed') else ''}")
    print(f"  arch: {best['arch']}")
    print(f"  results: {outcome.folder}/trials.parquet, trials.csv, best.json")
    return 0


def train_task(cfg: Any) -> int:
    from .trainone import run_train

    out = run_train(cfg)
    acc = (f"test accuracy {out['test_accuracy']:.4f} (minival {out['minival_accuracy']:.4f})"
           if out["test_accuracy"] is not None else f"minival accuracy {out['minival_accuracy']:.4f} (no test split)")
    print(f"nas-train: {out['name']}: {acc} after {out['epochs']} epochs; saved in {out['folder']}")
    return 0


def search_main(argv: list[str] | None = None) -> None:
    sys.exit(run_app("nas_search", search_task, argv))


def train_main(argv: list[str] | None = None) -> None:
    sys.exit(run_app("nas_train", train_task, argv))


if __name__ == "__main__":  # pragma: no cover
    search_main()
