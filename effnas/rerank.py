"""Top-k re-evaluation, shared by both stages: after a search's proxy runs, the best ``k`` are
trained again at a higher fidelity (more epochs and images, several seeds), so that the answer --
stage 1's ``best.json``, stage 2's ``coefficients.yaml`` -- is the best on the mean of those runs,
not the luckiest draw of a one-epoch proxy. The ``rerank`` config group (``top3``, ``none``) and
the seeds of the re-evaluations live here; each stage picks its own candidates (stage 1: trials by
proxy reward, :mod:`nas.rerank`; stage 2: distinct networks by proxy accuracy,
:mod:`scaling_search.points`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from .schema import Schema, rule

__all__ = ["RERANK_OF", "RERANK_SEED", "RerankConfig", "rerank_seed"]

RERANK_OF = "rerank_of"      # user attribute of a re-evaluation trial: the trial it re-evaluates
RERANK_SEED = "rerank_seed"  # ... and which of its seeds it is (0, 1, ...)


@dataclass
class RerankConfig(Schema):
    """The ``rerank`` group: after the proxy runs, re-train the top ``k`` at a higher fidelity with
    ``seeds`` seeds; the answer names the best mean. ``k: 0`` (``rerank=none``) turns it off."""

    _key: ClassVar[str] = "rerank"

    k: int = rule(3, ge=0)                        # candidates re-evaluated (0: off)
    seeds: int = rule(2, ge=1)                    # training seeds per candidate
    epochs: int = rule(2, ge=1)                   # epochs of each re-evaluation
    train_size: Optional[int] = rule(20000, ge=1)  # training images (seeded subset); null = all


def rerank_seed(search_seed: int, original: int, seed_index: int) -> int:
    """The training seed of re-evaluation ``seed_index`` of trial ``original``: never a proxy seed
    (those are ``search.seed + trial number``)."""
    return search_seed + 1_000_003 * (seed_index + 1) + original
