"""Optuna samplers, one registry entry each; the entry is the ``sampler`` config group's schema
and builds Optuna's own sampler with a seed."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import optuna
from omegaconf import MISSING

from ..registry import Registry
from ..schema import Schema, rule

__all__ = ["SAMPLERS", "SamplerConfig", "TPEConfig", "RandomConfig", "NSGAIIConfig", "make_sampler"]

SAMPLERS: Registry[type] = Registry("sampler")


@dataclass
class SamplerConfig(Schema):
    _key: ClassVar[str] = "sampler"
    multi_objective: ClassVar[bool] = False  # a sampler of (accuracy, FLOPs) Pareto fronts

    name: str = MISSING

    def build(self, seed: int | None) -> optuna.samplers.BaseSampler:
        raise NotImplementedError


@SAMPLERS.register("tpe")
@dataclass
class TPEConfig(SamplerConfig):
    """Optuna's TPE. ``multivariate`` + ``group`` model the stage choices jointly and handle the
    conditional ``expand`` parameter (asked only for mbconv): measured better than independent TPE
    and random search at small budgets (bench/search_quality.py, README)."""

    name: str = "tpe"
    n_startup_trials: int = rule(10, ge=0)
    multivariate: bool = True
    group: bool = True

    def build(self, seed: int | None) -> optuna.samplers.BaseSampler:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.n_startup_trials,
                                              multivariate=self.multivariate, group=self.group)


@SAMPLERS.register("random")
@dataclass
class RandomConfig(SamplerConfig):
    name: str = "random"

    def build(self, seed: int | None) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=seed)


@SAMPLERS.register("nsgaii")
@dataclass
class NSGAIIConfig(SamplerConfig):
    """Multi-objective: maximise accuracy, minimise FLOPs; the result is the Pareto front."""

    multi_objective: ClassVar[bool] = True

    name: str = "nsgaii"
    population_size: int = rule(20, ge=2)

    def build(self, seed: int | None) -> optuna.samplers.BaseSampler:
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=self.population_size)


def make_sampler(name: str, seed: int | None, **options) -> optuna.samplers.BaseSampler:
    """Python API: ``make_sampler("tpe", 0, n_startup_trials=5)``."""
    return SAMPLERS.get(name)(**options).build(seed)
