"""The constrained alpha/beta/gamma grid of compound scaling at phi = 1 -- pure, no training.

The paper keeps points with ``alpha * beta**2 * gamma**2 ~= 2``: one step of phi should double
the FLOPs. With the official rounding (``ceil`` of repeats, filters to multiples of 8, an integer
resolution) the real network is rarely 2x: B0 scaled by the paper's (1.2, 1.1, 1.15) costs about
2.5x, because ``ceil(1.2 * 1) = 2`` doubles every one-layer stage. So every point carries both
figures: ``product`` (the formula) and ``flops_ratio`` (FLOPs of the rounded phi = 1 network at
``round(r0 * gamma)`` over the base's FLOPs at ``r0``). ``mode="product"`` keeps points by the
first, ``mode="measured_flops"`` (rounding-aware) by the second.

Values are stepped exactly, ``round(low + i * step, 10)``, so 1.15 is 1.15 and not
1.1500000000000001, and a value equal to a bound is always included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

from search_space import ArchSpec, count_flops, count_params, scale_resolution, scale_spec

__all__ = ["MODES", "KINDS", "GridSpec", "GridPoint", "product_of", "grid_values", "scaled_spec",
           "measure_point", "constrained_grid", "match_flops"]

MODES = ("product", "measured_flops")
# What a scaled network is: the compound point, or one of the paper's single-dimension baselines.
KINDS = ("compound", "depth", "width", "resolution")
_EPS = 1e-9  # float slack when comparing a distance with tol (1.15 ** 2 is not exactly 1.3225)
_MAX_CANDIDATES = 200_000


def product_of(alpha: float, beta: float, gamma: float) -> float:
    """``alpha * beta**2 * gamma**2``: the formula's FLOPs factor of one phi step."""
    return alpha * beta ** 2 * gamma ** 2


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def grid_values(low: float, high: float, step: float) -> list[float]:
    """``low, low + step, ...`` up to ``high`` inclusive, without float drift."""
    count = int(math.floor((high - low) / step + _EPS))
    return [round(low + i * step, 10) for i in range(count + 1)]


@dataclass(frozen=True)
class GridSpec:
    """Ranges ``[low, high]`` of alpha (depth), beta (width), gamma (resolution), the step, and the
    constraint ``|figure - target| <= tol`` where the figure is the product or the measured ratio."""

    alpha: tuple[float, float] = (1.0, 1.5)
    beta: tuple[float, float] = (1.0, 1.3)
    gamma: tuple[float, float] = (1.0, 1.3)
    step: float = 0.05
    tol: float = 0.1
    mode: str = "product"
    target: float = 2.0

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "gamma"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
                raise ValueError(f"grid.{name} must be [low, high], got {value!r}")
            pair = tuple(value)
            if len(pair) != 2:
                raise ValueError(f"grid.{name} must be [low, high] (two numbers), got {list(pair)!r}")
            low, high = (_number(f"grid.{name}", v) for v in pair)
            if low < 1 or high < 1:
                raise ValueError(f"grid.{name}=[{low:g}, {high:g}] is below 1: scaling multipliers must be "
                                 f">= 1 (the paper's alpha, beta, gamma >= 1)")
            if low > high:
                raise ValueError(f"grid.{name}=[{low:g}, {high:g}]: low must be <= high")
            object.__setattr__(self, name, (low, high))
        step = _number("grid.step", self.step)
        if step <= 0:
            raise ValueError(f"grid.step must be > 0, got {self.step!r}")
        tol = _number("grid.tol", self.tol)
        if tol <= 0:
            raise ValueError(f"grid.tol must be > 0, got {self.tol!r}")
        target = _number("grid.target", self.target)
        if target <= 1:
            raise ValueError(f"grid.target must be > 1 (the paper's FLOPs factor is 2), got {self.target!r}")
        if self.mode not in MODES:
            raise ValueError(f"grid.mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        object.__setattr__(self, "step", step)
        object.__setattr__(self, "tol", tol)
        object.__setattr__(self, "target", target)
        size = self.candidates()
        if size > _MAX_CANDIDATES:
            raise ValueError(f"grid.step={step:g} gives {size} candidate points (more than "
                             f"{_MAX_CANDIDATES}); use a larger grid.step or narrower ranges")

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None) -> GridSpec:
        cfg = dict(cfg or {})
        known = {"alpha", "beta", "gamma", "step", "tol", "mode", "target"}
        unknown = set(cfg) - known
        if unknown:
            raise ValueError(f"unknown grid option(s) {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**{k: v for k, v in cfg.items() if v is not None})

    def values(self, name: str) -> list[float]:
        low, high = getattr(self, name)
        return grid_values(low, high, self.step)

    def candidates(self) -> int:
        return math.prod(len(self.values(n)) for n in ("alpha", "beta", "gamma"))

    def accepts(self, figure: float) -> bool:
        return abs(figure - self.target) <= self.tol + _EPS

    def to_dict(self) -> dict[str, Any]:
        return {"alpha": list(self.alpha), "beta": list(self.beta), "gamma": list(self.gamma),
                "step": self.step, "tol": self.tol, "mode": self.mode, "target": self.target}


@dataclass(frozen=True)
class GridPoint:
    """One scaled network at phi = 1. ``flops_ratio``, ``resolution``, ``flops`` and ``params`` are
    measured on the rounded network (``None`` when no base was given)."""

    alpha: float
    beta: float
    gamma: float
    product: float
    flops_ratio: float | None = None
    resolution: int | None = None
    flops: int | None = None
    params: int | None = None
    kind: str = "compound"

    def params_dict(self) -> dict[str, float]:
        """What is enqueued in the study (``trial.suggest_float`` reads the same names)."""
        return {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma}


def scaled_spec(base: ArchSpec, width: float, depth: float) -> ArchSpec:
    """``scale_spec`` with the official rounding; the identity (1, 1) returns the base untouched
    (``round_filters`` would otherwise move a searched width like 12 to 16)."""
    if width == 1 and depth == 1:
        return base
    return scale_spec(base, width=width, depth=depth)


def measure_point(base: ArchSpec, resolution: int, alpha: float, beta: float, gamma: float, *,
                  kind: str = "compound", base_flops: int | None = None) -> tuple[GridPoint, ArchSpec]:
    """The rounded phi = 1 network of one point, and its figures relative to the base at
    ``resolution``. Returns ``(point, spec)``; the spec's ``resolution`` is ``round(r0 * gamma)``."""
    res = scale_resolution(resolution, gamma)
    spec = scaled_spec(base, width=beta, depth=alpha).replace(resolution=res)
    flops = count_flops(spec, res)
    b0 = count_flops(base, resolution) if base_flops is None else base_flops
    point = GridPoint(alpha, beta, gamma, product_of(alpha, beta, gamma), flops / b0, res, flops,
                      count_params(spec), kind)
    return point, spec


def constrained_grid(grid: GridSpec, base: ArchSpec | None = None, resolution: int | None = None, *,
                     allow_empty: bool = False) -> list[GridPoint]:
    """Every point of the stepped ranges inside the constraint, in (alpha, beta, gamma) order.

    With a ``base`` (and ``resolution``, default the base's own) each point also carries the
    measured FLOPs ratio, params and resolution; ``mode="measured_flops"`` needs one. An empty
    result raises ``ValueError`` saying which bound to widen (unless ``allow_empty``)."""
    if grid.mode == "measured_flops" and base is None:
        raise ValueError("grid.mode=measured_flops needs a base network to measure")
    r0 = (base.resolution if base is not None else None) if resolution is None else resolution
    b0 = count_flops(base, r0) if base is not None else None
    values = {n: grid.values(n) for n in ("alpha", "beta", "gamma")}
    kept: list[GridPoint] = []
    figures: list[float] = []
    for a in values["alpha"]:
        for b in values["beta"]:
            for g in values["gamma"]:
                p = product_of(a, b, g)
                if grid.mode == "product" and not grid.accepts(p):
                    figures.append(p)
                    continue
                if base is None:
                    point = GridPoint(a, b, g, p)
                else:
                    point, _ = measure_point(base, r0, a, b, g, base_flops=b0)
                figure = p if grid.mode == "product" else point.flops_ratio
                figures.append(figure)
                if grid.accepts(figure):
                    kept.append(point)
    if not kept and not allow_empty:
        raise ValueError(_empty_message(grid, min(figures), max(figures)))
    return kept


def _empty_message(grid: GridSpec, low: float, high: float) -> str:
    what = "alpha·beta²·gamma²" if grid.mode == "product" else "measured FLOPs ratio"
    window = f"[{grid.target - grid.tol:g}, {grid.target + grid.tol:g}]"
    head = (f"empty grid: no point of grid.alpha={list(grid.alpha)}, grid.beta={list(grid.beta)}, "
            f"grid.gamma={list(grid.gamma)} (step {grid.step:g}) has {what} in {window} "
            f"(reachable: {low:.3f} to {high:.3f});")
    if high < grid.target - grid.tol:
        example = ""
        if grid.mode == "product":  # the alpha high that alone reaches the window
            a_max = grid.values("alpha")[-1]
            need = (grid.target - grid.tol) / (high / a_max)
            steps = math.ceil(round((need - grid.alpha[0]) / grid.step, 6))
            example = f" (e.g. grid.alpha=[{grid.alpha[0]:g},{round(grid.alpha[0] + steps * grid.step, 10):g}])"
        return (f"{head} raise the high of grid.alpha, grid.beta or grid.gamma{example} or raise "
                f"grid.tol")
    if low > grid.target + grid.tol:
        return (f"{head} lower the low of grid.alpha, grid.beta or grid.gamma (not below 1) or "
                f"raise grid.tol")
    return f"{head} raise grid.tol (now {grid.tol:g}) or use a smaller grid.step"


def match_flops(base: ArchSpec, resolution: int, kind: str, target_flops: float, *,
                step: float = 0.01, max_multiplier: float = 8.0) -> tuple[GridPoint, ArchSpec]:
    """The single-dimension network (``kind`` depth, width or resolution) whose real, rounded FLOPs
    are closest to ``target_flops`` -- the paper's Table 3 / Figure 8 baselines.

    Depth and width are searched over multipliers ``1, 1 + step, ...`` (FLOPs are a step function
    of them), resolution over every integer size from ``resolution`` up; ties go to the smaller
    multiplier. Returns ``(point, spec)`` with ``point.kind == kind``."""
    if kind not in KINDS[1:]:
        raise ValueError(f"kind must be one of {', '.join(KINDS[1:])}, got {kind!r}")
    b0 = count_flops(base, resolution)
    best: tuple[float, tuple[GridPoint, ArchSpec]] | None = None
    if kind == "resolution":
        multipliers = (r / resolution for r in range(resolution, int(resolution * max_multiplier) + 1))
    else:
        multipliers = iter(grid_values(1.0, max_multiplier, step))
    for m in multipliers:
        a, b, g = {"depth": (m, 1.0, 1.0), "width": (1.0, m, 1.0), "resolution": (1.0, 1.0, m)}[kind]
        point, spec = measure_point(base, resolution, a, b, g, kind=kind, base_flops=b0)
        distance = abs(point.flops - target_flops)
        if best is None or distance < best[0]:
            best = (distance, (point, spec))
        if point.flops > 1.5 * target_flops:  # FLOPs only grow from here
            break
    assert best is not None
    return best[1]
