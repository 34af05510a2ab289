"""Proxy trainer: train a spec briefly on real data and measure minival accuracy.

Designed for the search loop: data is already in memory at the proxy resolution (``nas.data``),
the model runs channels_last (about 3x faster convolutions on CPU), validation accuracy is
reported after every epoch to a callback (an Optuna pruner hook), and a non-finite loss stops the
run with :class:`Diverged` instead of crashing the study.

BN statistics after short training: with TF's BN momentum (PyTorch 0.01) the running statistics
are still mostly their initial values after a few hundred steps and the eval-mode accuracy is at
chance (measured: 10% vs 79% on Fashion-MNIST). The default here is 0.1, and
``bn_recalibrate_batches`` re-estimates the statistics on training batches before validation.

Threads: ``threads: null`` trains with :func:`effnas.threads.default_threads` -- the CPUs this
process may use (affinity mask, capped by ``SLURM_CPUS_PER_TASK`` and a set ``OMP_NUM_THREADS``),
not torch's own default; ``threads=N`` uses N. Torch's thread count is restored afterwards. How
idle OpenMP threads wait is set by the environment before torch is imported (:mod:`effnas.threads`).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

import torch
from torch import nn

from search_space import ArchSpec, build_model
from search_space.model import EffNet, fold_batchnorm

from .data import Batches, DataSplits, ImageDataset
from .io import atomic_write, remove_stale_temp
from .optim import OPTIMIZERS, SCHEDULES
from .schema import Schema, rule
from .threads import torch_threads
from .units import fmt_seconds

__all__ = ["ProxyConfig", "TrainConfig", "TrainResult", "Diverged", "train_and_evaluate", "evaluate",
           "resolve_device", "CheckpointError", "result_settings"]

log = logging.getLogger(__name__)


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that belongs to another training."""


def _device_ok(device: str) -> bool:
    return device in ("auto", "cpu") or str(device) == "cuda" or bool(re.fullmatch(r"cuda:\d+", str(device)))


@dataclass
class ProxyConfig(Schema):
    """The ``proxy`` config group: the data budget and recipe of one training run, shared by every
    command (``nas-search`` and ``scale-search`` train each candidate with it, ``nas-train`` and
    ``scale-family train.upto`` with the ``full`` option)."""

    _key: ClassVar[str] = "proxy"

    epochs: int = rule(1, ge=1)
    train_size: Optional[int] = rule(10000, ge=1)  # training images (seeded subset); null = all
    minival_size: int = rule(5000, ge=1)           # held out of the training split for validation
    resolution: int = rule(32, ge=32)              # five stride-2 stages: at least 32 px
    batch_size: int = rule(128, ge=1)
    optimizer: str = rule("sgd", choices=OPTIMIZERS.names)
    lr: Optional[float] = rule(None, gt=0)         # null: the optimizer's per-256 default x batch/256
    weight_decay: float = rule(1e-5, ge=0)
    momentum: float = rule(0.9, ge=0, lt=1)
    schedule: str = rule("cosine", choices=SCHEDULES.names)
    warmup_epochs: float = rule(0.0, ge=0)
    label_smoothing: float = rule(0.1, ge=0, lt=1)
    bn_momentum: float = rule(0.1, gt=0, le=1)     # PyTorch convention; TF's 0.99 (= 0.01) fails in short runs
    bn_recalibrate_batches: int = rule(10, ge=0)   # re-estimate BN statistics before validating
    augment: bool = True
    flip: bool = True
    threads: Optional[int] = rule(None, ge=1)      # torch threads per worker; null = the CPUs it may use
    device: str = "auto"                           # auto | cpu | cuda[:N]
    channels_last: bool = True
    eval_batch_size: int = rule(500, ge=1)

    def validate(self) -> None:
        if not _device_ok(self.device):
            raise self.fail("device", f"must be auto, cpu or cuda[:N], got {self.device!r}")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else OPTIMIZERS.get(self.optimizer).lr_per_256 * self.batch_size / 256

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(**{**dataclasses.asdict(self), "seed": seed})


@dataclass
class TrainConfig(ProxyConfig):
    """A :class:`ProxyConfig` with the seed of one run (what :func:`train_and_evaluate` takes)."""

    seed: int = rule(0, ge=0)


@dataclass
class TrainResult:
    accuracy: float  # on the validation split (minival), in [0, 1]
    epochs_done: int
    train_seconds: float
    images_per_second: float
    history: list[dict] = field(default_factory=list)
    model: nn.Module | None = None


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"proxy.device={device} but no CUDA device is available; use auto or cpu")
    return torch.device(device)


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # No weight decay on BN and biases (standard for EfficientNet-style training).
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return OPTIMIZERS.get(cfg.optimizer).build(groups, cfg.learning_rate, cfg.momentum)


def _lr_factor(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    return SCHEDULES.get(cfg.schedule)(step, warmup, cfg.epochs * steps_per_epoch, steps_per_epoch)


@torch.no_grad()
def _recalibrate_bn(model: nn.Module, batches: Batches, num_batches: int) -> None:
    """Re-estimate BN running statistics as a cumulative average over training batches."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for i, (x, _) in enumerate(batches):
        if i >= num_batches:
            break
        model(x)
    for m, mom in zip(bns, saved):
        m.momentum = mom


def evaluate(model: nn.Module, ds: ImageDataset, mean, std, batch_size: int = 500,
             device: torch.device | str = "cpu", channels_last: bool = True) -> float:
    """Top-1 accuracy of ``model`` on a prepared dataset. ``model`` is put in eval mode; an
    :class:`~search_space.model.EffNet` is evaluated as a copy with its BN folded into the
    convolutions (:func:`~search_space.model.fold_batchnorm`: the same top-1, logits equal to float
    rounding; a median 1.26x faster, 1.10-1.66x over nine networks on one quiet thread,
    ``bench/evaluation.py``), the model itself left as it was."""
    model.eval()
    if isinstance(model, EffNet):
        model = fold_batchnorm(copy.deepcopy(model))  # fold_batchnorm runs under no_grad itself
    correct = 0
    with torch.inference_mode():
        for x, y in Batches(ds, batch_size, mean, std, shuffle=False, augment=False,
                            channels_last=channels_last, device=device):
            correct += int((model(x).argmax(1) == y).sum())
    return correct / len(ds)


EpochCallback = Callable[[int, float], None]

CHECKPOINT_VERSION = 1
# What does not change a training's result (but its speed or memory): a study's protocol
# (effnas.protocol) and a checkpoint's identity leave it out, so either may differ on resume.
NOT_PROTOCOL = ("threads", "device", "eval_batch_size", "channels_last")
RESUMING = "resuming after epoch"  # how a resumed training's first progress line starts


def result_settings(cfg: ProxyConfig) -> dict[str, Any]:
    """The settings of ``cfg`` that decide a training's result: all but :data:`NOT_PROTOCOL`."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_PROTOCOL}


def _checkpoint_identity(spec: ArchSpec, data: DataSplits, cfg: TrainConfig, eval_split: str) -> dict[str, Any]:
    """What a resumed run must share with the run that wrote the checkpoint: the architecture, the
    recipe and seed, and the data (name, counts, a digest of the labels in their order -- cheap, and
    another subset or split order changes it)."""
    labels = hashlib.sha1(data.train.labels.contiguous().numpy().tobytes())
    val = getattr(data, eval_split)
    labels.update(val.labels.contiguous().numpy().tobytes())
    return {"arch": spec.to_string(), "eval_split": eval_split,
            "train": result_settings(cfg),
            "data": {"name": data.name, "train_images": len(data.train), "eval_images": len(val),
                     "labels": labels.hexdigest()[:16]}}


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append(f"{prefix}{key} ({x!r} there, {y!r} here)")
    return out


def _load_checkpoint(path: Path, identity: dict) -> dict | None:
    """The state saved at ``path`` if it exists and was written by the same training; else
    :class:`CheckpointError` (nothing is removed: the user decides)."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- torn, truncated or not a checkpoint at all
        first = (str(exc).strip().splitlines() or [""])[0][:100]
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {first}); "
                              f"remove it to train from the start") from None
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint {path} is not a training checkpoint of version {CHECKPOINT_VERSION}; "
                              f"remove it to train from the start")
    diff = _differences(state["identity"], identity)
    if diff:
        raise CheckpointError(f"checkpoint {path} belongs to another training: {'; '.join(diff[:3])}"
                              f"{f' and {len(diff) - 3} more' if len(diff) > 3 else ''}; remove it to train "
                              f"from the start")
    return state


def _rng_state(batches: Batches, device: torch.device) -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "batches": batches.generator.get_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def _set_rng_state(rng: dict[str, Any], batches: Batches, device: torch.device) -> None:
    torch.set_rng_state(rng["torch"])
    batches.generator.set_state(rng["batches"])
    if device.type == "cuda" and rng.get("cuda") is not None:
        torch.cuda.set_rng_state(rng["cuda"], device)


def train_and_evaluate(spec: ArchSpec, data: DataSplits, cfg: TrainConfig,
                       on_epoch: EpochCallback | None = None, *, keep_model: bool = False,
                       eval_split: str = "minival", progress: Callable[[str], None] | None = None,
                       validate_every_epoch: bool = True,
                       checkpoint: str | Path | None = None) -> TrainResult:
    """Train ``spec`` under ``cfg`` on ``data.train`` and validate on ``data.minival``.

    ``on_epoch(epoch, accuracy)`` is called after every validated epoch (1-based) and may raise --
    e.g. ``optuna.TrialPruned`` -- to stop the run. With ``validate_every_epoch=False`` only the
    last epoch is validated (BN recalibration and evaluation: about 3% of a 5-epoch run; the other
    epochs' history has ``accuracy`` None) -- for runs that report only the final accuracy.
    Raises :class:`Diverged` on a non-finite loss.

    ``checkpoint``: a file written (atomically) after every epoch -- weights, optimiser state, the
    step, history and every random generator the training draws from -- and resumed from when it
    exists, so an interrupted or killed run continues after its last finished epoch and ends with
    the same weights and accuracy as a run never interrupted (on the same device and thread count;
    other thread counts change the order of float sums). A checkpoint of another training (another
    architecture, recipe, seed or data) raises :class:`CheckpointError` and is left alone. The
    caller removes the file once it has kept the result.
    """
    if spec.num_classes != data.num_classes or spec.in_channels != data.in_channels:
        raise ValueError(f"spec has {spec.num_classes} classes / {spec.in_channels} channels but the "
                         f"dataset {data.name} has {data.num_classes} / {data.in_channels}")
    device = resolve_device(cfg.device)
    with torch_threads(cfg.threads):
        torch.manual_seed(cfg.seed)
        model = build_model(spec, bn_momentum=cfg.bn_momentum).to(device)
        memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        model = model.to(memory_format=memory_format)
        optimizer = _optimizer(model, cfg)
        base_lrs = [g["lr"] for g in optimizer.param_groups]
        criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        train_batches = Batches(data.train, cfg.batch_size, data.mean, data.std, shuffle=True,
                                augment=cfg.augment, flip=cfg.flip, seed=cfg.seed,
                                channels_last=cfg.channels_last, device=device,
                                drop_last=len(data.train) >= 2 * cfg.batch_size)
        val_ds = getattr(data, eval_split)
        steps_per_epoch = len(train_batches)
        history: list[dict] = []
        train_time = 0.0
        images = 0
        step = 0
        accuracy = 0.0
        start = 1
        if checkpoint is not None:
            checkpoint = Path(checkpoint)
            remove_stale_temp(checkpoint.parent)  # a checkpoint half-written by a killed process
            identity = _checkpoint_identity(spec, data, cfg, eval_split)
            state = _load_checkpoint(checkpoint, identity)
            if state is not None:
                model.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
                _set_rng_state(state["rng"], train_batches, device)
                history, step, images = state["history"], state["step"], state["images"]
                train_time, accuracy, start = state["train_seconds"], state["accuracy"], state["epoch"] + 1
                message = f"{RESUMING} {state['epoch']}/{cfg.epochs} from {checkpoint}"
                (progress or log.info)(message)
        for epoch in range(start, cfg.epochs + 1):
            model.train()
            t0 = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            for x, y in train_batches:
                factor = _lr_factor(cfg, step, steps_per_epoch)
                for g, lr in zip(optimizer.param_groups, base_lrs):
                    g["lr"] = lr * factor
                loss = criterion(model(x), y)
                if not torch.isfinite(loss):
                    raise Diverged(f"loss became {float(loss.detach())} at epoch {epoch}, step {step + 1}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach()
                step += 1
                images += x.shape[0]
            epoch_time = time.perf_counter() - t0
            train_time += epoch_time
            validate = validate_every_epoch or epoch == cfg.epochs
            if validate:
                if cfg.bn_recalibrate_batches:
                    _recalibrate_bn(model, train_batches, cfg.bn_recalibrate_batches)
                accuracy = evaluate(model, val_ds, data.mean, data.std, cfg.eval_batch_size, device,
                                    cfg.channels_last)
            record = {"epoch": epoch, "loss": float(loss_sum) / steps_per_epoch,
                      "accuracy": accuracy if validate else None,
                      "seconds": epoch_time, "images_per_second": len(data.train) / max(epoch_time, 1e-9)}
            history.append(record)
            if checkpoint is not None:
                state = {"version": CHECKPOINT_VERSION, "identity": identity, "epoch": epoch,
                         "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "rng": _rng_state(train_batches, device), "history": history, "step": step,
                         "images": images, "train_seconds": train_time, "accuracy": accuracy}
                atomic_write(checkpoint, lambda p: torch.save(state, p))
            if progress is not None:
                left = cfg.epochs - epoch  # at the mean pace of the epochs so far (resumed ones too)
                eta = left * sum(h["seconds"] for h in history) / len(history)
                progress(f"epoch {epoch}/{cfg.epochs}: loss {record['loss']:.3f}, "
                         + (f"{eval_split} acc {accuracy:.4f}, " if validate else "")
                         + f"{record['images_per_second']:.0f} img/s"
                         + (f", ETA {fmt_seconds(eta)}" if left else ""))
            if on_epoch is not None and validate:
                on_epoch(epoch, accuracy)
        return TrainResult(accuracy=accuracy, epochs_done=cfg.epochs, train_seconds=train_time,
                           images_per_second=images / max(train_time, 1e-9), history=history,
                           model=model if keep_model else None)
