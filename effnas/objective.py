"""Rewards: MnasNet's ``ACC(m) * (cost(m) / T) ** w`` with its piecewise exponent.

``w = alpha`` when ``cost <= T`` and ``w = beta`` otherwise. The *soft* constraint
(alpha = beta = -0.07, EfficientNet's choice) trades accuracy for cost smoothly; the *hard*
constraint (alpha = 0, beta = -1) ignores cost below T and punishes it sharply above.
The cost is FLOPs (multiply-adds, by formula), parameters, or measured latency in ms.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

from search_space import ArchSpec, count_flops, count_params, reference_spec

from .schema import Schema, rule

__all__ = ["Reward", "ObjectiveConfig", "METRICS", "cost_of", "auto_target", "measure_latency_ms"]

METRICS = ("flops", "params", "latency")


@dataclass(frozen=True)
class Reward:
    """``reward(acc, cost) = acc * (cost / target) ** (alpha if cost <= target else beta)``."""

    target: float
    alpha: float = -0.07
    beta: float = -0.07
    metric: str = "flops"

    def __post_init__(self) -> None:
        if isinstance(self.target, bool) or not isinstance(self.target, (int, float)) \
                or not math.isfinite(self.target) or self.target <= 0:
            raise ValueError(f"objective.target must be a positive number (or 'auto'), got {self.target!r}")
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value > 0:
                raise ValueError(f"objective.{name} must be a number <= 0, got {value!r}")
        if self.metric not in METRICS:
            raise ValueError(f"objective.metric must be one of {', '.join(METRICS)}, got {self.metric!r}")

    def exponent(self, cost: float) -> float:
        return self.alpha if cost <= self.target else self.beta

    def __call__(self, accuracy: float, cost: float) -> float:
        if cost <= 0:
            raise ValueError(f"cost must be positive, got {cost!r}")
        return accuracy * (cost / self.target) ** self.exponent(cost)


def measure_latency_ms(spec: ArchSpec, resolution: int | None = None, repeats: int = 20,
                       warmup: int = 3, threads: int | None = None) -> float:
    """Median wall time (ms) of one batch-1 inference on this machine's CPU."""
    import torch

    from search_space import build_model

    res = spec.resolution if resolution is None else resolution
    model = build_model(spec).eval().to(memory_format=torch.channels_last)
    x = torch.randn(1, spec.in_channels, res, res).contiguous(memory_format=torch.channels_last)
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        times = []
        with torch.inference_mode():
            for i in range(warmup + repeats):
                t0 = time.perf_counter()
                model(x)
                if i >= warmup:
                    times.append((time.perf_counter() - t0) * 1000.0)
    finally:
        torch.set_num_threads(old)
    return statistics.median(times)


def cost_of(spec: ArchSpec, metric: str, resolution: int | None = None, **latency_kw: Any) -> float:
    """The cost the reward uses: FLOPs (formula), params, or latency in ms (measured)."""
    if metric == "flops":
        return float(count_flops(spec, resolution))
    if metric == "params":
        return float(count_params(spec))
    if metric == "latency":
        return measure_latency_ms(spec, resolution, **latency_kw)
    raise ValueError(f"objective.metric must be one of {', '.join(METRICS)}, got {metric!r}")


def auto_target(metric: str, num_classes: int, in_channels: int, resolution: int, **latency_kw: Any) -> float:
    """``T: auto``: the cost of EfficientNet-B0 with this task's head, channels and resolution."""
    b0 = reference_spec("efficientnet-b0", num_classes=num_classes, in_channels=in_channels)
    return cost_of(b0.replace(resolution=resolution), metric, resolution, **latency_kw)


@dataclass
class ObjectiveConfig(Schema):
    """The ``objective`` config group: ``soft`` (EfficientNet's alpha = beta = w = -0.07) or
    ``hard`` (MnasNet's hard constraint: alpha = 0, beta = -1)."""

    _key: ClassVar[str] = "objective"

    metric: str = rule("flops", choices=METRICS)  # flops (formula) | params | latency (ms, measured, batch 1)
    target: Any = "auto"           # T; auto = EfficientNet-B0's cost at the proxy's resolution/classes/channels
    w: float = rule(-0.07, lt=0)   # the exponent on both sides unless alpha / beta are set
    alpha: Optional[float] = rule(None, le=0)   # exponent when cost <= T (null: w)
    beta: Optional[float] = rule(None, le=0)    # exponent when cost > T (null: w)
    max_flops: Optional[float] = rule(None, gt=0)   # hard limits: a bigger candidate is rejected untrained
    max_params: Optional[float] = rule(None, gt=0)

    def validate(self) -> None:
        t = self.target
        if t != "auto" and (isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0):
            raise self.fail("target", f"must be a positive number or 'auto', got {t!r}")

    def reward(self, target: float) -> Reward:
        """The reward with ``T = target`` (``target`` resolves ``auto``)."""
        return Reward(float(target), self.w if self.alpha is None else self.alpha,
                      self.w if self.beta is None else self.beta, self.metric)
