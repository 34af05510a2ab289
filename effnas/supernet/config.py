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

# supernet settings added after supernets were first cached: in the key and the protocol only when on
_LATER = ("stage_distill", "progressive")


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
    (the regular conv, expansion 1, no skip) learn features the next stage can read. ``progressive``
    > 0 phases those options in: over that fraction of the training, a random subnet's op, skip and
    expansion choices keep to the nested options (MBConv, identity skip, expansion > 1) with a
    probability falling from 1 to 0 (uniform sampling only), then every choice is uniform. The recipe otherwise is the ``proxy`` group's
    (optimizer, schedule, batch size, augmentation, BN momentum); ``lr`` null takes its rate. The
    defaults (``distill`` off, ``stage_distill`` 10) are the setting that ranked best where a ranking
    could be measured: four supernets of each in a space with the skip choice, Kendall tau against
    the proxy 0.40 +- 0.10 vs 0.15 +- 0.10 with in-place distillation alone (README "A
    weight-sharing evaluator"). ``seed`` draws the supernet's initial weights, its data order and
    its subnets (null: the study's ``search.seed``, which also draws the train/minival split whatever
    ``seed`` says): another ``seed`` trains another supernet of the same protocol, to see how much a
    ranking owes to one supernet's luck."""

    name: str = "supernet"
    epochs: int = rule(10, ge=1)                    # supernet training epochs
    train_size: Optional[int] = rule(20000, ge=1)   # its training images (seeded subset); null = all
    random_subnets: int = rule(2, ge=0)             # sandwich rule: random subnets per step
    sampling: str = rule("uniform", choices=("uniform", "fair"))  # the random subnets: independent | fair
    distill: bool = False                           # in-place distillation from the largest subnet
    lr: Optional[float] = rule(None, gt=0)          # null: proxy.lr (or its optimizer's default)
    stage_distill: float = rule(10.0, ge=0)         # weight of the stage-wise feature loss (0: off)
    progressive: float = rule(0.0, ge=0, le=1)      # training fraction that phases non-nested options in (0: off)
    recalibrate_batches: int = rule(5, ge=1)        # BN re-estimation batches per candidate
    eval_size: Optional[int] = rule(2000, ge=1)     # minival images per candidate (its first); null = all
    seed: Optional[int] = rule(None, ge=0)          # its initial weights, data order and subnets; null: search.seed
    cache_dir: Optional[str] = None                 # null: <results_dir>/supernets

    def validate(self) -> None:
        if self.progressive and self.sampling != "uniform":
            raise self.fail("progressive", f"needs evaluator.sampling=uniform, got sampling={self.sampling} "
                                           f"(fair sampling draws every option at every step)")

    def training_settings(self) -> dict[str, Any]:
        """What decides the trained weights (part of the cache key). The settings added later
        (``_LATER``) only where they are on: supernets cached before them keep their keys."""
        keys = ("epochs", "train_size", "random_subnets", "sampling", "distill", "lr") + \
            tuple(k for k in _LATER if getattr(self, k))
        return {k: getattr(self, k) for k in keys}

    def training_seed(self, study_seed: int) -> int:
        """The seed the supernet is trained with (its cache key holds it)."""
        return study_seed if self.seed is None else self.seed

    def protocol(self) -> dict[str, Any]:
        """What decides a trial's score: everything but where the cache lives (the settings added
        later only where they are on, ``seed`` only where set: studies made before them resume
        unchanged)."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k != "cache_dir" and (k not in _LATER or v) and (k != "seed" or v is not None)}
