"""Training the supernet: the sandwich rule with stage-wise feature distillation, resumable per epoch.

Each step trains, on one batch, the largest subnet (hard labels), the smallest and
``random_subnets`` random ones (BigNAS's sandwich rule: the extremes bound every subnet, so
training them lifts the whole space), and sums their gradients into one optimizer step. With
``distill`` the others learn the largest's soft predictions of the same batch (in-place
distillation: no teacher to train first, and the small subnets see a smoother target). With
``stage_distill`` each random subnet's stages also learn the largest's stage outputs from its
stage inputs (:func:`_stage_loss`) -- the default, without ``distill``: in the one space where a
ranking could be measured this ranked networks better (``bench/supernet.py``; README "A
weight-sharing evaluator"); with ``progressive`` the random subnets keep to the nested options with
a probability that falls from 1 to 0 over that fraction of the steps.

The random subnets' own loss (hard labels) is recorded beside the largest's (``random_loss`` in
the history, and in the progress lines): the largest and the smallest can train well while every
other subnet stays at chance, and only this number shows it.

The recipe is the ``proxy`` group's (optimizer, schedule and warm-up, batch size, augmentation,
label smoothing, weight decay), over ``epochs`` of ``train_size`` images. After every epoch the
weights, optimizer state and history go to a checkpoint; a run that is interrupted (SIGINT /
SIGTERM raise :class:`~effnas.study.Interrupted`) or killed resumes from the last one. Each epoch's
data order and subnets come from ``seed + epoch``, so a resumed run draws what an uninterrupted
one would have.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Batches, DataSplits
from ..io import atomic_write
from ..threads import torch_threads
from ..train import Diverged, ProxyConfig, TrainConfig, _lr_factor, _optimizer, resolve_device
from ..units import fmt_seconds
from .config import SupernetConfig
from .model import SuperNet, fair_specs, largest_spec, random_spec, smallest_spec

__all__ = ["train_supernet"]

log = logging.getLogger("effnas")


def _random_text(loss_sum: float, n: int) -> str:
    """The random subnets' mean loss for a progress line: where it stays near ``ln(classes)`` while
    the largest subnet's falls, the shared weights serve the largest only."""
    return f", random subnets {loss_sum / n:.3f}" if n else ""


def _stage_loss(net: SuperNet, spec, feats: list[torch.Tensor]) -> torch.Tensor:
    """Block-wise feature distillation: each stage of ``spec`` run on the teacher's input to it
    (``feats[i]``, its first channels) against the teacher's output of it (``feats[i + 1]``), mean
    squared error on the channels they share, averaged over the stages. The teacher's features are
    detached: the loss moves the subnet's weights only."""
    total = 0.0
    for i, stage in enumerate(spec.stages):
        out = net.stage(feats[i][:, :stage.in_filters].detach(), spec, i)
        total = total + F.mse_loss(out, feats[i + 1][:, :stage.out_filters].detach())
    return total / len(spec.stages)


def recipe(proxy: ProxyConfig, cfg: SupernetConfig, seed: int) -> TrainConfig:
    """The proxy recipe with the supernet's epochs, training images and learning rate."""
    return dataclasses.replace(proxy, epochs=cfg.epochs, train_size=cfg.train_size,
                               lr=cfg.lr if cfg.lr is not None else proxy.lr).train_config(seed)


def _distill(logits: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    return -(soft * F.log_softmax(logits, 1)).sum(1).mean()


def train_supernet(net: SuperNet, data: DataSplits, cfg: SupernetConfig, proxy: ProxyConfig, seed: int,
                   checkpoint: Path, *, heartbeat: Callable[[], None] | None = None,
                   log_every: float = 30.0) -> list[dict]:
    """Train ``net`` in place on ``data.train``; resume from ``checkpoint`` when it exists (and
    write it after every epoch). Returns the per-epoch history. Progress lines (epoch, step, loss,
    images/s, ETA) go to the ``effnas`` logger at most every ``log_every`` seconds and after
    every epoch; ``heartbeat`` is called after every step (the cache's lock keeps itself fresh)."""
    tc = recipe(proxy, cfg, seed)
    device = resolve_device(tc.device)
    with torch_threads(tc.threads):
        net.to(device)
        memory_format = torch.channels_last if tc.channels_last else torch.contiguous_format
        optimizer = _optimizer(net, tc)
        base_lrs = [g["lr"] for g in optimizer.param_groups]
        history: list[dict] = []
        start = 1
        if checkpoint.exists():
            state = torch.load(checkpoint, map_location=device, weights_only=True)
            net.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            history, start = state["history"], state["epoch"] + 1
            log.info("supernet: resuming after epoch %d/%d from %s", state["epoch"], tc.epochs, checkpoint)
        big, small = largest_spec(net.space), smallest_spec(net.space)
        criterion = nn.CrossEntropyLoss(label_smoothing=tc.label_smoothing)
        steps_per_epoch = len(Batches(data.train, tc.batch_size, data.mean, data.std,
                                      drop_last=len(data.train) >= 2 * tc.batch_size))
        total_steps = steps_per_epoch * tc.epochs
        t_start, steps_done, last_log = time.monotonic(), 0, time.monotonic()
        for epoch in range(start, tc.epochs + 1):
            torch.manual_seed(seed + epoch)
            rng = random.Random(seed * 100_003 + epoch)
            batches = Batches(data.train, tc.batch_size, data.mean, data.std, shuffle=True, augment=tc.augment,
                              flip=tc.flip, seed=seed + epoch, channels_last=tc.channels_last, device=device,
                              drop_last=len(data.train) >= 2 * tc.batch_size)
            net.train()
            loss_sum, others_sum, others_n, t0 = 0.0, 0.0, 0, time.perf_counter()
            for i, (x, y) in enumerate(batches):
                step = (epoch - 1) * steps_per_epoch + i
                factor = _lr_factor(tc, step, steps_per_epoch)
                for g, lr in zip(optimizer.param_groups, base_lrs):
                    g["lr"] = lr * factor
                optimizer.zero_grad(set_to_none=True)
                x = x.contiguous(memory_format=memory_format)
                if cfg.stage_distill:  # the largest's stage outputs: what the random subnets' stages learn
                    logits, feats = net(x, big, check=False, features=True)
                else:
                    logits = net(x, big, check=False)
                loss = criterion(logits, y)
                if not torch.isfinite(loss):
                    raise Diverged(f"supernet loss became {float(loss)} at epoch {epoch}, step {i + 1}")
                loss.backward()
                soft = logits.detach().softmax(1)
                nested = max(0.0, 1.0 - step / (cfg.progressive * total_steps)) if cfg.progressive else 0.0
                others = fair_specs(net.space, rng, cfg.random_subnets) if cfg.sampling == "fair" else \
                    [random_spec(net.space, rng, nested) for _ in range(cfg.random_subnets)]
                for spec in [small, *others]:
                    out = net(x, spec, check=False)
                    (_distill(out, soft) if cfg.distill else criterion(out, y)).backward()
                    if cfg.stage_distill and spec is not small:
                        (cfg.stage_distill * _stage_loss(net, spec, feats)).backward()
                    if spec is not small:  # the random subnets' own loss (hard labels), whatever they learn from
                        others_sum += float(criterion(out.detach(), y))
                        others_n += 1
                optimizer.step()
                loss_sum += float(loss.detach())
                steps_done += 1
                if heartbeat is not None:
                    heartbeat()
                now = time.monotonic()
                if now - last_log >= log_every:
                    last_log = now
                    rate = steps_done / (now - t_start)
                    left = total_steps - step - 1
                    log.info("supernet: epoch %d/%d step %d/%d, loss %.3f%s, %.0f img/s, ETA %s", epoch, tc.epochs,
                             i + 1, steps_per_epoch, loss_sum / (i + 1), _random_text(others_sum, others_n),
                             rate * tc.batch_size, fmt_seconds(left / rate))
            seconds = time.perf_counter() - t0
            history.append({"epoch": epoch, "loss": loss_sum / steps_per_epoch, "seconds": seconds,
                            "random_loss": others_sum / others_n if others_n else None})
            state = {"epoch": epoch, "model": net.state_dict(), "optimizer": optimizer.state_dict(),
                     "history": history}
            atomic_write(checkpoint, lambda p: torch.save(state, p))
            rate = steps_done / max(time.monotonic() - t_start, 1e-9)
            log.info("supernet: epoch %d/%d done: loss %.3f (largest subnet)%s, %.0fs, ETA %s", epoch, tc.epochs,
                     history[-1]["loss"], _random_text(others_sum, others_n), seconds,
                     fmt_seconds((tc.epochs - epoch) * steps_per_epoch / rate))
            last_log = time.monotonic()
        return history
