"""Optuna pruners, one registry entry each; the entry is the ``pruner`` config group's schema.

Pruners see the reward after each epoch and never stop a trial after its last epoch (the
evaluator's rule), so they only act with ``proxy.epochs`` > 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import optuna
from omegaconf import MISSING

from ..registry import Registry
from ..schema import Schema, rule

__all__ = ["PRUNERS", "PrunerConfig", "make_pruner"]

PRUNERS: Registry[type] = Registry("pruner")


@dataclass
class PrunerConfig(Schema):
    _key: ClassVar[str] = "pruner"

    name: str = MISSING

    def build(self, max_epochs: int) -> optuna.pruners.BasePruner:
        raise NotImplementedError


@PRUNERS.register("median")
@dataclass
class MedianConfig(PrunerConfig):
    """Stop a candidate whose reward after an epoch is below the median of finished trials then."""

    name: str = "median"
    n_startup_trials: int = rule(3, ge=0)
    n_warmup_steps: int = rule(0, ge=0)

    def build(self, max_epochs: int) -> optuna.pruners.BasePruner:
        return optuna.pruners.MedianPruner(n_startup_trials=self.n_startup_trials,
                                           n_warmup_steps=self.n_warmup_steps)


@PRUNERS.register("hyperband")
@dataclass
class HyperbandConfig(PrunerConfig):
    name: str = "hyperband"
    min_resource: int = rule(1, ge=1)
    reduction_factor: int = rule(3, ge=2)

    def build(self, max_epochs: int) -> optuna.pruners.BasePruner:
        return optuna.pruners.HyperbandPruner(min_resource=self.min_resource, max_resource=max(1, max_epochs),
                                              reduction_factor=self.reduction_factor)


@PRUNERS.register("threshold")
@dataclass
class ThresholdConfig(PrunerConfig):
    """Stop any candidate whose reward (about its minival accuracy) is below ``lower`` after an
    epoch before its last (e.g. chance level)."""

    name: str = "threshold"
    lower: float = rule(0.2, ge=0, le=1)

    def build(self, max_epochs: int) -> optuna.pruners.BasePruner:
        return optuna.pruners.ThresholdPruner(lower=self.lower)


@PRUNERS.register("none")
@dataclass
class NoneConfig(PrunerConfig):
    name: str = "none"

    def build(self, max_epochs: int) -> optuna.pruners.BasePruner:
        return optuna.pruners.NopPruner()


def make_pruner(name: str, max_epochs: int, **options) -> optuna.pruners.BasePruner:
    """Python API: ``make_pruner("median", 3, n_startup_trials=1)``."""
    return PRUNERS.get(name)(**options).build(max_epochs)
