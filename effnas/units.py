"""Counts and durations as progress lines print them: ``3.78M``, ``12m05s``, ``1h07m``.

Dependency-free, so that the trainers (``effnas.train``, ``effnas.supernet.train``) format their
ETAs as the study loop's progress lines do without importing the loop."""

from __future__ import annotations

import math

__all__ = ["fmt_count", "fmt_seconds"]


def fmt_count(n: float | None) -> str:
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
