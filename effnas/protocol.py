"""A study's protocol: everything that decides a trial's score, recorded when the study is created
and compared on every resume (:func:`effnas.study.open_study`), so results made under different
protocols never mix in one study.

The protocol holds the data's identity (dataset name, root folder and a fingerprint of the images
and labels the trials see), the resolution, the training budget and recipe, and -- from each stage --
the objective and the space (stage 1) or the base network (stage 2), and the evaluator's settings
(a supernet's accuracies never mix with stand-alone ones). What does not change a score
may differ between runs: threads, device, evaluation batch size, memory format, timeouts, budgets,
samplers, storages.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from .data import DataSplits
from .train import NOT_PROTOCOL, ProxyConfig, result_settings

__all__ = ["data_identity", "training_protocol", "checkpoint_path", "NOT_PROTOCOL"]


def _digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha1()
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def data_identity(dataset: Any, data: DataSplits) -> dict[str, Any]:
    """Name, root folder, image counts and a fingerprint of the prepared training and minival data."""
    values = dataclasses.asdict(dataset) if dataclasses.is_dataclass(dataset) else dict(dataset)
    root = values.get("root")
    return {
        "name": data.name,
        "root": str(Path(root).expanduser().resolve()) if root else None,
        "train_images": len(data.train), "minival_images": len(data.minival),
        "fingerprint": _digest(data.train.images, data.train.labels, data.minival.images, data.minival.labels),
    }


def training_protocol(proxy: ProxyConfig, evaluator: Any = None) -> dict[str, Any]:
    """The proxy config minus what does not change a score, and -- under ``evaluator`` -- the
    evaluator's settings where it has any (``evaluator=supernet``; the default ``proxy`` evaluator
    adds nothing, so studies made before the evaluator group resume unchanged)."""
    out = result_settings(proxy)
    extra = evaluator.protocol() if evaluator is not None else None
    if extra is not None:
        out["evaluator"] = extra
    return out


def checkpoint_path(folder: Path, name: str, spec: Any, dataset: Any, data: DataSplits, proxy: ProxyConfig,
                    seed: int) -> Path:
    """``<folder>/<name>-<digest>.pt``: where a command's training of ``spec`` saves itself after
    every epoch (:func:`effnas.train.train_and_evaluate`'s ``checkpoint``). The digest covers what
    decides the result -- the architecture, the data's identity, the recipe, the seed -- so the
    same command finds its checkpoint again and another training never picks it up."""
    what = {"arch": spec.to_string(), "data": data_identity(dataset, data), "train": training_protocol(proxy),
            "seed": seed}
    digest = hashlib.sha1(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return folder / f"{name}-{digest}.pt"
