"""Hydra entry points ``scale-search`` and ``scale-family``: thin layers over
:func:`scaling_search.search.run_scale_search` and :func:`scaling_search.family.run_family`.

Errors are one line on stderr and exit status 2 (the shell: :mod:`effnas.cli`); an interrupted
``scale-search`` writes its results and exits 130 / 143.
"""

from __future__ import annotations

import sys
from typing import Any

from effnas.cli import run_app
from effnas.study import exit_code

from . import config  # noqa: F401 -- registers the root schemas

__all__ = ["search_main", "family_main", "search_task", "family_task"]


def search_task(cfg: Any) -> int:
    from .search import run_scale_search

    outcome = run_scale_search(cfg)
    if outcome.skipped:
        print(outcome.skipped, flush=True)
        return 0
    counts = ", ".join(f"{n} {s.lower()}" for s, n in outcome.counts.items())
    if outcome.interrupted:
        print(f"scale-search interrupted by {outcome.interrupted}: the running trial was marked FAIL; "
              f"{counts}; results written to {outcome.folder}", file=sys.stderr, flush=True)
        return exit_code(outcome.interrupted)
    best = outcome.best
    if best is None:
        print(f"scale-search: no grid point completed ({counts}); see {outcome.folder / 'grid.csv'}")
        return 1
    print(f"scale-search: study {outcome.study_name}: {counts}")
    print(f"best point: alpha={best['alpha']:g} beta={best['beta']:g} gamma={best['gamma']:g} "
          f"(trial {best['trial']}): minival accuracy {best['accuracy']:.4f}"
          + (f" (proxy), {best['accuracy_reranked']:.4f} re-ranked (mean of {best['rerank']['protocol']['seeds']} "
             f"seeds)" if best.get("selected_by") == "rerank" else "")
          + f"; alpha·beta²·gamma² = {best['product']:.4f}, measured FLOPs x{best['flops_ratio']:.3f} of the base "
            f"({best['resolution']} px vs {best['base_resolution']} px)")
    for kind, b in (best.get("baselines") or {}).items():
        print(f"  {kind}-only at matched FLOPs (x{b['flops_ratio']:.3f}): accuracy {b['accuracy']:.4f} "
              f"(alpha={b['alpha']:g} beta={b['beta']:g} gamma={b['gamma']:g})")
    print(f"  results: {outcome.folder}/grid.parquet, grid.csv, coefficients.yaml")
    print(f"  next: scale-family coefficients={outcome.folder / 'coefficients.yaml'}")
    return 0


def family_task(cfg: Any) -> int:
    from .family import format_family, run_family

    outcome = run_family(cfg)
    print(f"scale-family: base {outcome.base_source}, coefficients {outcome.coefficients}")
    print(format_family(outcome.table))
    last = len(outcome.specs) - 1
    print(f"  results: {outcome.folder}/family.parquet, family.csv, family/b0.json"
          + (f" .. b{last}.json" if last else ""))
    return 0


def search_main(argv: list[str] | None = None) -> None:
    sys.exit(run_app("scale_search", search_task, argv))


def family_main(argv: list[str] | None = None) -> None:
    sys.exit(run_app("scale_family", family_task, argv))


if __name__ == "__main__":  # pragma: no cover
    search_main()
