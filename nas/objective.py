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
from typing import Any

from search_space import ArchSpec, count_flops, count_params, reference_spec

__all__ = ["Reward", "PRESETS", "METRICS", "cost_of", "auto_target", "measure_latency_ms"]

PRESETS: dict[str, tuple[float, float]] = {"soft": (-0.07, -0.07), "hard": (0.0, -1.0)}
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

    @classmethod
    def from_preset(cls, preset: str, target: float, metric: str = "flops",
                    w: float | None = None) -> Reward:
        """``preset`` is ``soft``, ``hard`` or ``custom`` (then ``w`` is used for both sides)."""
        if preset == "custom":
            if w is None:
                raise ValueError("objective.preset=custom needs objective.w")
            return cls(target, w, w, metric)
        if preset not in PRESETS:
            raise ValueError(f"objective.preset must be soft, hard or custom, got {preset!r}")
        alpha, beta = PRESETS[preset]
        if w is not None and preset == "soft":
            alpha = beta = w
        return cls(target, alpha, beta, metric)

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
