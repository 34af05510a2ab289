"""``nas-train``: train one architecture with a full budget and report test-set accuracy.

A dataset without a test split (a plain ``root/<class>/`` image folder) is trained all the same:
the run says so in one warning and reports minival accuracy, with ``test_accuracy: null``.

The architecture is anything :func:`search_space.resolve_arch` takes: a ``best.json`` (or its
results folder), an architecture string, or a reference name. The classifier and input channels
follow the dataset (said in one line when the architecture named others). Weights (``model.pt``),
metrics (``metrics.json``) and the resolved config are saved in a new folder -- never over an old one.

Interrupts: with ``checkpoint=true`` (the default) the training is saved after every epoch to
``<train folder>/checkpoints/<name>-<digest>.pt``, the digest naming what decides the result (the
architecture, the data's identity, the recipe, the seed). Ctrl-C, SIGTERM or a kill loses at most
the epoch in progress: the same command again resumes after the last saved epoch and ends with the
weights an uninterrupted run would have (same device and threads). The checkpoint is removed once
the results folder is written. While a run trains, the same command elsewhere on the machine (or on a
shared file system with working ``flock``) is refused in one line naming the running one's process
(exit 2) instead of training the same network twice into the same checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import logging
from pathlib import Path
from typing import Any

import torch

from effnas.allocator import in_use as allocator_in_use
from effnas.config import as_config
from effnas.io import Busy, locked, write_json
from effnas.protocol import checkpoint_path
from effnas.runs import save_config
from effnas.study import Interrupted, handle_signals
from effnas.task import load_data
from effnas.train import evaluate, train_and_evaluate
from search_space import count_flops, count_params, resolve_arch

from .config import NasTrainConfig

__all__ = ["run_train"]

log = logging.getLogger("effnas")


def run_train(cfg: NasTrainConfig | Any) -> dict[str, Any]:
    """Train ``cfg.arch`` with ``cfg.proxy`` on ``cfg.dataset``; returns the metrics record.
    Raises :class:`effnas.study.Interrupted` on SIGINT / SIGTERM: the epochs finished are in the
    checkpoint (``cfg.checkpoint``; the exception's ``detail`` says where), nothing else is saved."""
    cfg = as_config("nas_train", cfg)
    source = resolve_arch(cfg.arch, what="arch")
    resolution = cfg.resolution or source.resolution or \
        (source.spec().resolution if source.kind == "string" and "res=" in source.text else cfg.proxy.resolution)
    proxy = dataclasses.replace(cfg.proxy, resolution=resolution)
    data = load_data(cfg.dataset, proxy, cfg.seed, test="if_present")
    if data.test is None:
        log.warning("nas-train: %s has no test split (a plain <class>/ folder; root/train/<class>/ and "
                    "root/test/<class>/ give one), so the minival accuracy (%d images held out of the training "
                    "images) is reported instead of test accuracy", data.name, len(data.minival))
    spec = source.spec_for(data.num_classes, data.in_channels, what=f"dataset {data.name}", adapt=True,
                           note=lambda m: log.warning("nas-train: %s", m)).replace(resolution=resolution)
    if source.kind == "file":
        name = cfg.name or Path(source.text).parent.name
        base = Path(source.text).expanduser().resolve().parent / "train"
    else:
        name = cfg.name or (source.text if source.kind == "reference" else "arch")
        base = Path(cfg.results_dir).expanduser().resolve() / "train"
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = base / f"{name}_{stamp}"
    suffix = 1
    while folder.exists():
        suffix += 1
        folder = base / f"{name}_{stamp}_{suffix}"
    log.info("nas-train: %s at %d px on %s (%d train / %d minival / %s test images), %d epochs -> %s; "
             "memory allocator %s", name, spec.resolution, data.name, len(data.train), len(data.minival),
             "no" if data.test is None else len(data.test), proxy.epochs, folder, allocator_in_use())
    tcfg = proxy.train_config(cfg.seed)
    checkpoint = (checkpoint_path(base / "checkpoints", name, spec, cfg.dataset, data, proxy, cfg.seed)
                  if cfg.checkpoint else None)
    with contextlib.ExitStack() as held:
        if checkpoint is not None:  # one run per checkpoint: a second run of the same command is refused at once
            try:
                held.enter_context(locked(checkpoint.with_name(checkpoint.name + ".lock"), wait=False, owned=True))
            except Busy as exc:
                raise ValueError(f"another nas-train ({exc.holder}) is training {name} with the same data, recipe "
                                 f"and seed now (checkpoint {checkpoint}); wait for it to finish, or change seed= "
                                 f"or pass checkpoint=false to train a second copy") from None
        try:
            with handle_signals():
                result = train_and_evaluate(spec, data, tcfg, keep_model=True, progress=lambda m: log.info("%s", m),
                                            checkpoint=checkpoint)
        except Interrupted as exc:
            if checkpoint is not None and checkpoint.exists():
                exc.detail = f"the finished epochs are saved in {checkpoint}; run the same command again to resume"
            raise
        model = result.model
        test_acc = None if data.test is None else evaluate(
            model, data.test, data.mean, data.std, tcfg.eval_batch_size, next(model.parameters()).device,
            tcfg.channels_last)
        base.mkdir(parents=True, exist_ok=True)
        while True:  # another run of the same name may have taken this folder meanwhile
            try:
                folder.mkdir()
                break
            except FileExistsError:
                suffix += 1
                folder = base / f"{name}_{stamp}_{suffix}"
        save_config(dataclasses.asdict(cfg), folder)
        torch.save({"arch": spec.to_string(), "state_dict": model.state_dict(), "mean": data.mean,
                    "std": data.std}, folder / "model.pt")
        metrics = {"name": name, "arch": spec.to_string(), "dataset": data.name, "resolution": spec.resolution,
                   "test_accuracy": test_acc, "minival_accuracy": result.accuracy, "epochs": result.epochs_done,
                   "train_seconds": result.train_seconds, "params": count_params(spec),
                   "flops": count_flops(spec), "seed": cfg.seed, "history": result.history,
                   "train": dataclasses.asdict(tcfg), "folder": str(folder)}
        write_json(metrics, folder / "metrics.json")
        if checkpoint is not None:
            checkpoint.unlink(missing_ok=True)
        return metrics
