"""Scoring a candidate with the supernet: extract, re-estimate BN, measure minival accuracy.

Shared BN statistics belong to no subnet (every subnet saw them move), so each candidate's are
re-estimated from ``recalibrate_batches`` training batches -- the same batches for every candidate
(seeded, not augmented: the statistics minival sees), so candidates differ by their network only.
The candidate is extracted as its stand-alone :class:`~search_space.model.EffNet` (the exact
network a re-training would build), its BN folded into the convolutions once recalibrated
(:func:`~search_space.model.fold_batchnorm`: the same scores up to float rounding, evaluated
1.1-1.7x faster), and the inputs are prepared once, not per candidate.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from search_space import ArchSpec
from search_space.model import fold_batchnorm

from ..data import Batches, DataSplits
from ..threads import torch_threads
from ..train import EpochCallback, ProxyConfig, TrainConfig, TrainResult, _recalibrate_bn, resolve_device
from .config import SupernetConfig
from .model import SuperNet, random_spec

__all__ = ["SupernetEvaluator", "supernet_evaluator"]

log = logging.getLogger("effnas")


class SupernetEvaluator:
    """``accuracy(spec)`` of a subnet with inherited weights; ``train_and_evaluate``-shaped
    :meth:`__call__` so that :class:`effnas.evaluate.Evaluator` can use it in place of training."""

    def __init__(self, net: SuperNet, data: DataSplits, cfg: SupernetConfig, proxy: ProxyConfig,
                 seed: int, recal_data: DataSplits | None = None) -> None:
        self.net, self.cfg, self.proxy = net.eval(), cfg, proxy
        self.device = resolve_device(proxy.device)
        self.net.to(self.device)
        recal = recal_data or data
        fmt = dict(channels_last=proxy.channels_last, device=self.device)
        batches = Batches(recal.train, proxy.batch_size, recal.mean, recal.std, shuffle=True, augment=False,
                          seed=seed, **fmt)
        self.recal = [xy for _, xy in zip(range(cfg.recalibrate_batches), batches)]
        minival = data.minival if cfg.eval_size is None or cfg.eval_size >= len(data.minival) \
            else data.minival.subset(torch.arange(cfg.eval_size))
        self.minival = list(Batches(minival, proxy.eval_batch_size, data.mean, data.std, shuffle=False, **fmt))
        self.images = len(minival)
        self.path: Path | None = None  # the cached supernet file, when it came from the cache
        self.health: dict[str, Any] | None = None  # check()'s result, once run

    @torch.no_grad()
    def accuracy(self, spec: ArchSpec) -> float:
        with torch_threads(self.proxy.threads):
            model = self.net.subnet(spec).to(self.device)
            for block in model.blocks:  # BN statistics of the network as evaluated: no stochastic depth
                block.drop_connect = 0.0
            if self.proxy.channels_last:
                model = model.to(memory_format=torch.channels_last)
            _recalibrate_bn(model, self.recal, len(self.recal))
            fold_batchnorm(model.eval())  # inference only from here: faster to evaluate
            correct = 0
            with torch.inference_mode():
                for x, y in self.minival:
                    correct += int((model(x).argmax(1) == y).sum())
            return correct / self.images

    def check(self, n: int = 8, seed: int = 0) -> dict[str, Any]:
        """Score ``n`` random subnets (seeded, uniform over the space) and compare their median
        with chance (``1 / classes``): a supernet whose random subnets score near chance serves
        only the subnets its sandwich trains by name (the largest, the smallest), so its scores cannot
        rank the space. ``ok`` is False where the median is below ``chance + 0.1 * (1 - chance)``
        (0.19 for ten classes)."""
        rng = random.Random(seed)
        accs = sorted(self.accuracy(random_spec(self.net.space, rng)) for _ in range(n))
        chance = 1.0 / self.net.space.base.num_classes
        median = statistics.median(accs)
        return {"subnets": n, "median": median, "min": accs[0], "max": accs[-1], "chance": chance,
                "ok": median >= chance + 0.1 * (1 - chance)}

    def __call__(self, spec: ArchSpec, data: Any, cfg: TrainConfig, on_epoch: EpochCallback | None = None,
                 **_: Any) -> TrainResult:
        """The trial's score in :func:`effnas.train.train_and_evaluate`'s shape (``data`` and the
        recipe are the supernet's: they are ignored). ``epochs_done`` is 0: nothing was trained, and
        ``on_epoch`` is not called: there is no intermediate value for a pruner to judge."""
        t0 = time.perf_counter()
        accuracy = self.accuracy(spec)
        seconds = time.perf_counter() - t0
        return TrainResult(accuracy=accuracy, epochs_done=0, train_seconds=seconds,
                           images_per_second=self.images / max(seconds, 1e-9))


def supernet_evaluator(cfg: SupernetConfig, dataset: Any, proxy: ProxyConfig, space: Any, data: DataSplits,
                       seed: int, cache_dir: str | Path) -> SupernetEvaluator:
    """The ``supernet`` evaluator of a study: its supernet loaded from the cache, or trained there
    first (on ``cfg.train_size`` images of ``dataset``; minival is the same split as ``data``'s)."""
    from ..protocol import data_identity
    from ..task import load_data
    from .cache import load_or_train, supernet_identity

    train_data = data if cfg.train_size == proxy.train_size else \
        load_data(dataset, dataclasses.replace(proxy, train_size=cfg.train_size), seed)
    train_seed = cfg.training_seed(seed)
    identity = supernet_identity({**data_identity(dataset, train_data), "split_seed": seed}, space, proxy, cfg,
                                 train_seed)
    net, path = load_or_train(space, train_data, identity, proxy, cfg, train_seed, cache_dir)
    scorer = SupernetEvaluator(net, data, cfg, proxy, seed, recal_data=train_data)
    scorer.path = path
    health = scorer.health = scorer.check(seed=seed)
    text = (f"median {health['median']:.3f} over {health['subnets']} random subnets (min {health['min']:.3f}, "
            f"max {health['max']:.3f}; chance {health['chance']:.3f})")
    if health["ok"]:
        log.info("supernet: %s", text)
    else:
        log.warning("supernet: its random subnets score near chance: %s. Its scores cannot rank this space; "
                    "use evaluator=proxy, or a space whose choices share weights (README: 'Which choices a "
                    "supernet can serve')", text)
    return scorer
