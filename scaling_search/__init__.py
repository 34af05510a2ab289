"""Stage 2 of effnas: the compound-scaling grid at phi = 1 and the B0..B7 family.

``run_scale_search(cfg)`` and ``run_family(cfg)`` are the plain functions behind ``scale-search``
and ``scale-family``; ``constrained_grid`` and ``family_table`` are the pure parts.
"""

from .family import Coefficients, family_table, format_family, load_coefficients, run_family
from .grid import GridPoint, GridSpec, constrained_grid, match_flops, measure_point, product_of

__all__ = ["Coefficients", "GridPoint", "GridSpec", "constrained_grid", "family_table", "format_family",
           "load_coefficients", "match_flops", "measure_point", "product_of", "run_family",
           "run_scale_search"]


def __getattr__(name: str):  # the search imports torch (through nas.train): only when asked for
    if name == "run_scale_search":  # noqa: SIM102
        from .search import run_scale_search

        return run_scale_search
    raise AttributeError(f"module 'scaling_search' has no attribute {name!r}")
