"""Optimizers and learning-rate schedules of the proxy trainer: one registry entry each.

An optimizer entry builds a ``torch.optim`` optimizer from parameter groups and knows its default
learning rate per 256 images (scaled linearly with the batch size); a schedule is the factor on the
base learning rate at a step (after the linear warm-up, which the trainer applies).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from .registry import Registry

__all__ = ["OPTIMIZERS", "SCHEDULES", "Optimizer"]


@dataclass(frozen=True)
class Optimizer:
    build: Callable[[list[dict[str, Any]], float, float], Any]  # (param groups, lr, momentum)
    lr_per_256: float


OPTIMIZERS: Registry[Optimizer] = Registry("proxy.optimizer")
SCHEDULES: Registry[Callable[[int, int, int, int], float]] = Registry("proxy.schedule")


def _sgd(groups, lr, momentum):
    import torch

    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)


def _rmsprop(groups, lr, momentum):  # TF RMSProp: decay 0.9, eps 1e-3 (the paper's settings)
    import torch

    return torch.optim.RMSprop(groups, lr=lr, alpha=0.9, eps=1e-3, momentum=momentum)


def _adamw(groups, lr, momentum):
    import torch

    return torch.optim.AdamW(groups, lr=lr)


OPTIMIZERS.add("sgd", Optimizer(_sgd, 0.1))
OPTIMIZERS.add("rmsprop", Optimizer(_rmsprop, 0.016))
OPTIMIZERS.add("adamw", Optimizer(_adamw, 0.002))


@SCHEDULES.register("cosine")
def cosine(step: int, warmup: int, total: int, steps_per_epoch: int) -> float:
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@SCHEDULES.register("exponential")
def exponential(step: int, warmup: int, total: int, steps_per_epoch: int) -> float:
    """The paper's: x0.97 every 2.4 epochs."""
    return 0.97 ** ((step / steps_per_epoch) / 2.4)


@SCHEDULES.register("constant")
def constant(step: int, warmup: int, total: int, steps_per_epoch: int) -> float:
    return 1.0
