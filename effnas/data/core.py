"""The in-memory image dataset every source produces, and the error every data problem raises.

Every dataset is decoded once into an ``N x C x H x W`` uint8 tensor, so that batching is one index
operation (:mod:`effnas.data.batches`) and no per-image Python runs in the training loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["DataError", "ImageDataset", "MIN_RESOLUTION", "Split", "one_line"]

Split = Literal["train", "test"]

MIN_RESOLUTION = 32
"""Smallest resolution :func:`effnas.data.prepare` accepts: the search space downsamples 32x."""


class DataError(ValueError):
    """Bad data or a bad data argument; the message is one line saying what and what is valid."""


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


