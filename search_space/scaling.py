"""Compound-scaling rules, exactly as the official code rounds them.

``scale_spec`` is pure: it returns a new spec and never touches the base. Resolution travels
beside the spec: the spec's ``resolution`` is its default input size and scaling it is
``round(r0 * gamma ** phi)`` (:func:`scale_resolution`).
"""

from __future__ import annotations

import math
from dataclasses import replace

from .spec import ArchSpec

__all__ = ["round_filters", "round_repeats", "scale_resolution", "scale_spec"]


def round_filters(filters: int, width: float = 1.0, divisor: int = 8, min_depth: int | None = None) -> int:
    """Official filter rounding: scale, round to a multiple of ``divisor`` (never below it), and
    add one more ``divisor`` when rounding lost more than 10%.

    >>> round_filters(16, 1.2), round_filters(32, 1.1), round_filters(1280, 2.0)
    (24, 32, 2560)
    """
    if width <= 0 or not math.isfinite(width):
        raise ValueError(f"width multiplier must be a positive number, got {width!r}")
    if divisor <= 0:
        raise ValueError(f"divisor must be positive, got {divisor!r}")
    min_depth = min_depth or divisor
    scaled = filters * width
    new = max(min_depth, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


def round_repeats(repeats: int, depth: float = 1.0) -> int:
    """Official depth rounding: ``ceil(depth * repeats)``."""
    if depth <= 0 or not math.isfinite(depth):
        raise ValueError(f"depth multiplier must be a positive number, got {depth!r}")
    return int(math.ceil(depth * repeats))


def scale_resolution(resolution: int, gamma: float, phi: float = 1.0) -> int:
    """``round(r0 * gamma ** phi)``, the resolution of the phi-th family member."""
    if gamma <= 0 or not math.isfinite(gamma):
        raise ValueError(f"resolution multiplier must be a positive number, got {gamma!r}")
    return int(round(resolution * gamma ** phi))


def scale_spec(spec: ArchSpec, width: float = 1.0, depth: float = 1.0,
               resolution: int | None = None, dropout: float | None = None) -> ArchSpec:
    """A new spec with every width (stem, stages, head) and every stage depth scaled by the
    official rounding rules. ``resolution``/``dropout``, when given, replace the spec's."""
    scaled = []
    prev = round_filters(spec.stem, width)
    for stage in spec.stages:
        out = round_filters(stage.out_filters, width)
        scaled.append(replace(stage, in_filters=prev, out_filters=out,
                              repeats=round_repeats(stage.repeats, depth)))
        prev = out
    changes: dict = {"stages": tuple(scaled), "stem": round_filters(spec.stem, width),
                     "head": round_filters(spec.head, width)}
    if resolution is not None:
        changes["resolution"] = resolution
    if dropout is not None:
        changes["dropout"] = dropout
    return replace(spec, **changes)
