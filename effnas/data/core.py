"""The in-memory image dataset every source produces, and the error every data problem raises.

Every dataset is decoded once into an ``N x C x H x W`` uint8 tensor, so that batching is one index
operation (:mod:`effnas.data.batches`) and no per-image Python runs in the training loop.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

__all__ = ["DataError", "ImageDataset", "MIN_RESOLUTION", "MissingData", "Split", "Survey", "available_memory",
           "check_memory", "format_bytes", "one_line"]

Split = Literal["train", "test"]

MIN_RESOLUTION = 32
"""Smallest resolution :func:`effnas.data.prepare` accepts: the search space downsamples 32x."""


class DataError(ValueError):
    """Bad data or a bad data argument; the message is one line saying what and what is valid."""


class MissingData(DataError):
    """The dataset's files are not there (no root folder, or a root without the expected files).

    Sources raise it for "nothing to read here"; :func:`effnas.data.load_dataset` adds the fixes
    (the Debian package, ``dataset.root``, ``dataset.download``) from the source's registry entry.
    """


@dataclass(frozen=True)
class Survey:
    """What a source would decode for one split, found without decoding (headers only).

    ``size`` is the (height, width) every image is decoded to, ``peak_bytes`` the transient memory
    of decoding the largest single image (its native pixels and converted copy) on top of the
    resident ``count x channels x height x width`` uint8 tensor.
    """

    count: int
    channels: int
    size: tuple[int, int]
    peak_bytes: int = 0

    def resident_bytes(self, count: int | None = None, resolution: int | None = None) -> int:
        """Memory held after decoding ``count`` images (default: all) as uint8, and, when they are
        then resized to ``resolution`` (:func:`effnas.data.prepare`) from another size, the resized
        copy and the float32 chunk that resizing works in."""
        n = self.count if count is None else count
        height, width = self.size
        decoded = n * self.channels * height * width
        if resolution is None or (height, width) == (resolution, resolution):
            return decoded
        resized = n * self.channels * resolution * resolution
        chunk = min(n, RESIZE_CHUNK) * self.channels * (height * width + resolution * resolution) * 4
        return decoded + resized + chunk


RESIZE_CHUNK = 4096
"""Images per chunk when resizing or summing in float: bounds the float32 temporaries."""


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_room() -> int | None:
    """Bytes left under this process's cgroup memory limit (v2 or v1), None without a limit."""
    relative = ["/"]
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers in ("", "memory") or "memory" in controllers.split(","):
                relative.append(path)
    except (OSError, ValueError):
        pass
    rooms = []
    for rel in dict.fromkeys(relative):
        for base, limit_file, usage_file in (("/sys/fs/cgroup", "memory.max", "memory.current"),
                                             ("/sys/fs/cgroup/memory", "memory.limit_in_bytes",
                                              "memory.usage_in_bytes")):
            folder = Path(base + rel.rstrip("/"))
            limit, usage = _read_int(folder / limit_file), _read_int(folder / usage_file)
            if limit is not None and usage is not None and limit < 1 << 60:  # v1 says "no limit" with ~2^63
                rooms.append(max(limit - usage, 0))
    return min(rooms) if rooms else None


def available_memory() -> int | None:
    """Bytes this process can still fill without swapping: MemAvailable (else free pages), capped by
    a cgroup memory limit; None when the system does not say."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = None
    room = _cgroup_room()
    if room is not None:
        available = room if available is None else min(available, room)
    return available


def check_memory(need: int, what: str, knobs: str) -> None:
    """Refuse in one line, before anything is decoded, when ``need`` bytes cannot fit in memory."""
    available = available_memory()
    if available is not None and need > available:
        raise DataError(f"{what} needs about {format_bytes(need)} of memory but {format_bytes(available)} is "
                        f"available; {knobs}")


def one_line(text: object) -> str:
    """Collapse whitespace so that messages built from exceptions stay on one line."""
    return " ".join(str(text).split())




@dataclass(frozen=True, eq=False)
class ImageDataset:
    """Images as one uint8 ``N x C x H x W`` tensor with int64 labels.

    Holding the whole dataset as a tensor is what lets batching be a single
    index operation.  Frozen so that splits and prepared copies can be shared
    freely; ``eq=False`` because element-wise tensor equality is not a bool.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    name: str

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            raise DataError(
                f"{self.name}: images must be a uint8 tensor N x C x H x W, "
                f"got {_describe(images)}"
            )
        if min(images.shape[1:]) < 1:
            raise DataError(f"{self.name}: image shape {tuple(images.shape[1:])} has an empty dimension")
        if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.dim() != 1:
            raise DataError(f"{self.name}: labels must be a 1-D int64 tensor, got {_describe(labels)}")
        if labels.shape[0] != images.shape[0]:
            raise DataError(
                f"{self.name}: {images.shape[0]} images but {labels.shape[0]} labels; expected equal counts"
            )
        if not isinstance(self.classes, tuple) or not all(isinstance(c, str) for c in self.classes):
            raise DataError(f"{self.name}: classes must be a tuple of str, got {self.classes!r}")
        if len(self.classes) < 2:
            raise DataError(f"{self.name}: {len(self.classes)} class(es); expected at least 2")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(self.classes)):
            raise DataError(
                f"{self.name}: labels span {int(labels.min())}..{int(labels.max())}, "
                f"expected 0..{len(self.classes) - 1}"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, images={tuple(self.images.shape)}, "
            f"num_classes={self.num_classes})"
        )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of every image."""
        return int(self.images.shape[2]), int(self.images.shape[3])

    def subset(self, indices: Sequence[int] | torch.Tensor) -> ImageDataset:
        """A new dataset of the images at ``indices`` (copied, in the given order)."""
        idx = _as_index(indices, len(self), self.name)
        return ImageDataset(self.images[idx], self.labels[idx], self.classes, self.name)


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def _as_index(indices: Sequence[int] | torch.Tensor, n: int, name: str) -> torch.Tensor:
    """Validate indices up front so a bad one reads as a DataError, not an IndexError deep in torch."""
    idx = indices if isinstance(indices, torch.Tensor) else torch.as_tensor(list(indices), dtype=torch.int64)
    if idx.dim() != 1 or idx.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise DataError(f"{name}: subset indices must be a 1-D integer sequence, got {_describe(idx)}")
    idx = idx.to(torch.int64)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise DataError(
            f"{name}: subset indices span {int(idx.min())}..{int(idx.max())}, expected 0..{n - 1}"
        )
    return idx


