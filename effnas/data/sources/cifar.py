"""CIFAR-10, "python version" pickles, unpickled with an allow-list (pickles can run code)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from ..core import DataError, ImageDataset, MissingData, Split, one_line
from ..registry import DatasetConfig, Source, register

__all__ = ["CIFAR10_CLASSES"]

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
_CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))




class _ArrayUnpickler(pickle.Unpickler):
    """Unpickle only plain containers and numpy arrays: pickles can run arbitrary code."""

    _ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    })

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def _load_cifar_pickle(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as handle:
            obj = _ArrayUnpickler(handle, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(
            f"{path}: cannot unpickle ({one_line(exc)}); "
            "expected a CIFAR-10 python batch"
        ) from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path}: holds a {type(obj).__name__}, expected a dict (CIFAR-10 python batch)")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _cifar_batch(path: Path, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    batch = _load_cifar_pickle(path)
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"{path}: keys {sorted(batch)}, expected b'data' and b'labels'")
    data, labels = batch["data"], batch["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise DataError(f"{path}: b'data' is {type(data).__name__} {shape}, expected a uint8 array N x 3072")
    try:
        label_array = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: b'labels' is not a list of ints ({one_line(exc)})") from exc
    if label_array.shape != (data.shape[0],):
        raise DataError(
            f"{path}: {data.shape[0]} images but b'labels' has shape {label_array.shape}; "
            f"expected {data.shape[0]} labels"
        )
    out_of_range = np.flatnonzero((label_array < 0) | (label_array >= num_classes))
    if out_of_range.size:
        i = int(out_of_range[0])
        raise DataError(
            f"{path}: label {int(label_array[i])} at index {i} out of range, expected 0..{num_classes - 1}"
        )
    images = torch.from_numpy(np.ascontiguousarray(data)).reshape(-1, 3, 32, 32)
    return images, torch.from_numpy(label_array)


def _cifar_classes(directory: Path) -> tuple[str, ...]:
    meta_path = directory / "batches.meta"
    if not meta_path.is_file():
        return CIFAR10_CLASSES
    names = _load_cifar_pickle(meta_path).get("label_names")
    if not isinstance(names, list) or len(names) < 2:
        raise DataError(f"{meta_path}: b'label_names' is {names!r:.60}, expected a list of class names")
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)


def _load_cifar10(root: Path, split: Split) -> ImageDataset:
    nested = root / "cifar-10-batches-py"
    directory = nested if nested.is_dir() else root
    files = _CIFAR_TRAIN_FILES if split == "train" else ("test_batch",)
    missing = [f for f in files if not (directory / f).is_file()]
    if missing:
        raise MissingData(
            f"cifar10: {', '.join(missing)} not found in {directory}; expected data_batch_1..5 and "
            "test_batch (the CIFAR-10 python version) in root or root/cifar-10-batches-py"
        )
    classes = _cifar_classes(directory)
    parts = [_cifar_batch(directory / f, len(classes)) for f in files]
    images = torch.cat([p[0] for p in parts])
    if images.shape[0] == 0:
        raise DataError(f"cifar10: {directory} holds 0 {split} images; expected at least 1")
    return ImageDataset(images, torch.cat([p[1] for p in parts]), classes, "cifar10")



register(Source("cifar10", lambda name, root, split: _load_cifar10(root, split),
                config=DatasetConfig(name="cifar10", flip=True)))
