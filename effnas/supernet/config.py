"""The ``evaluator`` config group: how a trial gets its accuracy.

``proxy`` (the default) trains every candidate briefly on its own (the ``proxy`` group's recipe).
``supernet`` trains one weight-sharing supernet per dataset and protocol, caches it, and scores
each candidate with inherited weights after re-estimating its BN statistics: far cheaper per
candidate, at the price of rank fidelity (``bench/supernet.py`` measures both).

The evaluator is part of a study's protocol (:func:`effnas.protocol.training_protocol`): a study
never mixes accuracies of two evaluators.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

from omegaconf import MISSING

from ..registry import Registry
from ..schema import Schema, rule

__all__ = ["EVALUATORS", "EvaluatorConfig", "ProxyEvaluatorConfig", "SupernetConfig"]

EVALUATORS: Registry[type] = Registry("evaluator")


@dataclass
class EvaluatorConfig(Schema):
    _key: ClassVar[str] = "evaluator"

    name: str = MISSING

    def protocol(self) -> dict[str, Any] | None:
        """What of this evaluator decides a trial's score (None: nothing beyond the proxy group)."""
        return None


@EVALUATORS.register("proxy")
@dataclass
class ProxyEvaluatorConfig(EvaluatorConfig):
    """Train each candidate stand-alone with the ``proxy`` recipe (the behaviour before supernets)."""

    name: str = "proxy"


@EVALUATORS.register("supernet")
@dataclass
class SupernetConfig(EvaluatorConfig):
    """A weight-sharing supernet, trained once with the sandwich rule (the largest, the smallest and
    ``random_subnets`` random subnets per step; with ``distill`` the others learn the largest's soft
    labels: in-place distillation, BigNAS). ``sampling: fair`` draws the random subnets of a step so
    that they share out every choice's options (FairNAS's strict fairness;
    :func:`~effnas.supernet.model.fair_specs`): with as many random subnets as a choice has options,
    each option -- the regular conv, no skip, expansion 1 -- is trained at every step. ``stage_distill``
    > 0 adds, for each random subnet, a stage-wise feature loss: each of its stages is run on the
    largest subnet's input to that stage and pulled (mean squared error, this weight) towards the
    largest's output of it, on the channels they share -- block-wise supervision as in DNA (Li et
    al. 2020), with the largest subnet as the in-place teacher -- so that branches of their own
    (the regular conv, expansion 1, no skip) learn features the next stage can read. The recipe otherwise is the ``proxy`` group's
    (optimizer, schedule, batch size, augmentation, BN momentum); ``lr`` null takes its rate."""

    name: str = "supernet"
    epochs: int = rule(10, ge=1)                    # supernet training epochs
    train_size: Optional[int] = rule(20000, ge=1)   # its training images (seeded subset); null = all
    random_subnets: int = rule(2, ge=0)             # sandwich rule: random subnets per step
    sampling: str = rule("uniform", choices=("uniform", "fair"))  # the random subnets: independent | fair
    distill: bool = True                            # in-place distillation from the largest subnet
    lr: Optional[float] = rule(None, gt=0)          # null: proxy.lr (or its optimizer's default)
    stage_distill: float = rule(0.0, ge=0)          # weight of the stage-wise feature loss (0: off)
    recalibrate_batches: int = rule(5, ge=1)        # BN re-estimation batches per candidate
    eval_size: Optional[int] = rule(2000, ge=1)     # minival images per candidate (its first); null = all
    cache_dir: Optional[str] = None                 # null: <results_dir>/supernets

    def training_settings(self) -> dict[str, Any]:
        """What decides the trained weights (part of the cache key). ``stage_distill`` only where it
        is on: supernets cached before it was a setting keep their keys."""
        keys = ("epochs", "train_size", "random_subnets", "sampling", "distill", "lr") + \
            (("stage_distill",) if self.stage_distill else ())
        return {k: getattr(self, k) for k in keys}

    def protocol(self) -> dict[str, Any]:
        """What decides a trial's score: everything but where the cache lives (``stage_distill``
        only where it is on: studies made before it was a setting resume unchanged)."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k != "cache_dir" and (k != "stage_distill" or self.stage_distill)}
