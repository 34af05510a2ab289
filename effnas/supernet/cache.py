"""The supernet cache: trained once per dataset, protocol and space, reused by every worker.

A supernet lives in ``<cache_dir>/<key>/`` where ``key`` hashes everything that decides its
weights (:func:`supernet_identity`): the training data's identity (name, root, image counts and a
fingerprint of the images and labels), the split seed, the resolution, the proxy recipe it trains
with, the supernet's own training settings and the space. The folder holds ``supernet.pt`` (the
weights, written atomically once training is done), ``identity.json`` (what the key hashes, for
people) and, while training, ``checkpoint.pt`` (one per epoch: an interrupted or killed run
resumes there).

Concurrent first use: the trainer holds ``train.lock`` (:class:`~effnas.study.locks.HolderSymlinkLock`,
with its holder recorded: a lock left by a dead process on this host is broken at once). A second
process waits for the lock, finds ``supernet.pt`` and loads it; had the first died, the second
resumes its checkpoint. The trainer touches the lock after every step, so a waiter on another host
breaks it only after ``grace_period`` seconds without progress.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from search_space import SearchSpace

from ..data import DataSplits
from ..io import atomic_write, write_json
from ..protocol import training_protocol
from ..study.locks import HolderSymlinkLock
from ..train import ProxyConfig
from .config import SupernetConfig
from .model import SuperNet
from .train import recipe, train_supernet

__all__ = ["supernet_identity", "supernet_key", "load_or_train", "space_identity"]

log = logging.getLogger("effnas")

VERSION = 3  # 3: initial weights seeded; bump when the supernet's layout or training changes what a cached file means


def space_identity(space: SearchSpace) -> dict[str, Any]:
    """The space as the supernet sees it: the base and every stage's resolved choices."""
    return {"base": space.base.to_string(), "activations": list(space.activations),
            "stages": [{"ops": list(st.ops), "expand": list(st.expand_ratios), "kernels": list(st.kernels),
                        "se": list(st.se_ratios), "skips": list(st.skips), "widths": list(st.widths),
                        "layer_deltas": list(st.layer_deltas)} for st in space.stages]}


def supernet_identity(data_identity: dict[str, Any], space: SearchSpace, proxy: ProxyConfig,
                      cfg: SupernetConfig, seed: int) -> dict[str, Any]:
    """Everything that decides a supernet's weights (what its cache key hashes)."""
    train = training_protocol(recipe(proxy, cfg, seed))
    train.pop("bn_recalibrate_batches")  # the proxy's validation, not the supernet's training
    return {"version": VERSION, "data": data_identity, "seed": seed, "resolution": proxy.resolution,
            "train": train, "supernet": cfg.training_settings(), "space": space_identity(space)}


def supernet_key(identity: dict[str, Any]) -> str:
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def initial_supernet(space: SearchSpace, proxy: ProxyConfig, seed: int) -> SuperNet:
    """The untrained supernet of ``space``, its initial weights drawn from ``seed`` (not from the
    process's global generator, which is left as it was): a key names one set of weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SuperNet(space, bn_momentum=proxy.bn_momentum)


def _load(net: SuperNet, path: Path) -> SuperNet:
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(state["model"])
    net.history = state.get("history", [])
    return net


def load_or_train(space: SearchSpace, data: DataSplits, identity: dict[str, Any], proxy: ProxyConfig,
                  cfg: SupernetConfig, seed: int, cache_dir: str | os.PathLike,
                  grace_period: int = 600) -> tuple[SuperNet, Path]:
    """The trained supernet of ``identity`` (see :func:`supernet_identity`) from the cache, trained
    here first if no process has; returns it and its file."""
    key = supernet_key(identity)
    folder = Path(cache_dir).expanduser() / key
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / "supernet.pt"
    net = initial_supernet(space, proxy, seed)
    if final.exists():
        log.info("supernet: loaded %s (trained before)", final)
        return _load(net, final), final
    lock = HolderSymlinkLock(str(folder / "train"), grace_period=grace_period)
    if lock.held():
        log.info("supernet: another process is training %s; waiting for it", folder)
    lock.acquire()
    try:
        if final.exists():
            log.info("supernet: loaded %s (trained by another process meanwhile)", final)
            return _load(net, final), final
        write_json(identity, folder / "identity.json")
        log.info("supernet: training %s (%d epochs on %d images, %d random subnets per step (%s), distillation %s)",
                 folder, cfg.epochs, len(data.train), cfg.random_subnets, cfg.sampling, "on" if cfg.distill else "off")
        checkpoint = folder / "checkpoint.pt"
        history = train_supernet(net, data, cfg, proxy, seed, checkpoint, heartbeat=lock.touch)
        net.to("cpu")
        state = {"model": net.state_dict(), "history": history, "identity": identity}
        atomic_write(final, lambda p: torch.save(state, p))
        checkpoint.unlink(missing_ok=True)
        net.history = history
        log.info("supernet: saved %s", final)
        return net, final
    finally:
        lock.release()
