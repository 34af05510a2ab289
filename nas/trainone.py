"""``nas-train``: train one architecture with a full budget and report test-set accuracy.

The architecture is a ``best.json`` (from ``nas-search``), an architecture string, or a reference
name. The classifier and input channels follow the dataset. Weights (``model.pt``), metrics
(``metrics.json``) and the resolved config are saved in a new folder -- never over an old one.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from pathlib import Path
from typing import Any

import torch

from search_space import ArchSpec, count_flops, count_params, reference_names, reference_spec

from .results import write_json
from .search import load_data, save_config, train_config
from .study import Interrupted, handle_signals
from .train import evaluate, train_and_evaluate

__all__ = ["resolve_arch", "run_train"]

log = logging.getLogger("effnas")


def resolve_arch(arch: str) -> tuple[ArchSpec, dict[str, Any] | None]:
    """``best.json`` path / architecture string / reference name -> spec (and the json, if any)."""
    if not isinstance(arch, str) or not arch.strip():
        raise ValueError(f"arch must be a best.json path, an architecture string or a reference name, got {arch!r}")
    text = arch.strip()
    path = Path(text).expanduser()
    if text.endswith(".json") or path.is_file():
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"arch file {text} does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"arch file {text} is not readable JSON ({exc})") from None
        if not isinstance(record, dict) or not isinstance(record.get("arch"), str):
            raise ValueError(f"arch file {text} has no 'arch' string (expected a best.json from nas-search)")
        try:
            return ArchSpec.from_string(record["arch"]), record
        except ValueError as exc:
            raise ValueError(f"arch file {text}: {exc}") from None
    if text.lower() in reference_names():
        return reference_spec(text), None
    if "_" in text or "=" in text:
        return ArchSpec.from_string(text), None
    raise ValueError(f"arch {text!r} is not a file, an architecture string or a reference name "
                     f"(valid names: {', '.join(reference_names())})")


def run_train(cfg: dict[str, Any]) -> dict[str, Any]:
    train = dict(cfg.get("train") or {})
    dataset = dict(cfg.get("dataset") or {})
    seed = int(cfg.get("seed", 0))
    spec, record = resolve_arch(cfg.get("arch", "efficientnet-b0"))
    if train.get("resolution") is None:
        train["resolution"] = int(record.get("resolution", spec.resolution)) if record else \
            (spec.resolution if "res=" in str(cfg.get("arch")) else 32)
    tcfg = train_config(train, seed)
    data = load_data(dataset, train, seed)
    spec = spec.replace(num_classes=data.num_classes, in_channels=data.in_channels,
                        resolution=train["resolution"])
    name = cfg.get("name") or (Path(cfg["arch"]).parent.name if record else
                               str(cfg.get("arch")) if str(cfg.get("arch")).lower() in reference_names()
                               else "arch")
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(cfg["arch"]).expanduser().resolve().parent / "train" if record else \
        Path(cfg.get("results_dir") or "results").expanduser().resolve() / "train"
    folder = base / f"{name}_{stamp}"
    suffix = 1
    while folder.exists():
        suffix += 1
        folder = base / f"{name}_{stamp}_{suffix}"
    folder.mkdir(parents=True)
    save_config(cfg, folder)
    log.info("nas-train: %s at %d px on %s (%d train / %d minival / %d test images), %d epochs -> %s",
             name, spec.resolution, data.name, len(data.train), len(data.minival), len(data.test),
             tcfg.epochs, folder)
    with handle_signals():
        try:
            result = train_and_evaluate(spec, data, tcfg, keep_model=True,
                                        progress=lambda m: log.info("%s", m))
        except Interrupted as exc:
            raise ValueError(f"interrupted by {exc.signame}: nothing saved in {folder}") from None
    model = result.model
    test_acc = evaluate(model, data.test, data.mean, data.std, tcfg.eval_batch_size,
                        next(model.parameters()).device, tcfg.channels_last)
    torch.save({"arch": spec.to_string(), "state_dict": model.state_dict(), "mean": data.mean,
                "std": data.std}, folder / "model.pt")
    metrics = {"name": name, "arch": spec.to_string(), "dataset": data.name, "resolution": spec.resolution,
               "test_accuracy": test_acc, "minival_accuracy": result.accuracy, "epochs": result.epochs_done,
               "train_seconds": result.train_seconds, "params": count_params(spec),
               "flops": count_flops(spec), "seed": seed, "history": result.history,
               "train": tcfg.to_dict(), "folder": str(folder)}
    write_json(metrics, folder / "metrics.json")
    return metrics
