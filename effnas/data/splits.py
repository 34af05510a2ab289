"""Train / minival / test of one dataset at one resolution, with training-set statistics."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .core import MIN_RESOLUTION, DataError, ImageDataset
from .registry import load_dataset

__all__ = ["DataSplits", "channel_stats", "load_splits", "prepare", "split_train_minival"]

_CHUNK = 4096  # images per chunk in prepare/channel_stats: bounds float32 temporaries




def _seeded_permutation(n: int, seed: int) -> torch.Tensor:
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise DataError(f"seed {seed!r} invalid; expected an int")
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def split_train_minival(
    ds: ImageDataset, minival_size: int | float, seed: int
) -> tuple[ImageDataset, ImageDataset]:
    """Carve a seeded random minival set out of a training set.

    The search ranks architectures on minival so that the official test split
    is never looked at.  ``minival_size`` is a count (int) or a fraction in
    (0, 1) (float).  The same seed always yields the same split; both parts
    keep the original file order.
    """
    n = len(ds)
    if isinstance(minival_size, bool) or not isinstance(minival_size, (int, float)):
        raise DataError(f"minival_size {minival_size!r} invalid; expected an int count or a float fraction")
    if isinstance(minival_size, float):
        if not 0.0 < minival_size < 1.0:
            raise DataError(
                f"minival_size {minival_size} invalid; "
                "a fraction must lie strictly between 0 and 1"
            )
        count = round(n * minival_size)
    else:
        count = minival_size
    if not 0 < count < n:
        raise DataError(
            f"minival_size {minival_size!r} gives {count} of {n} {ds.name} training images; "
            f"expected between 1 and {n - 1}"
        )
    perm = _seeded_permutation(n, seed)
    minival_idx, train_idx = perm[:count].sort().values, perm[count:].sort().values
    return ds.subset(train_idx), ds.subset(minival_idx)


def prepare(ds: ImageDataset, resolution: int) -> ImageDataset:
    """Resize every image once to ``resolution x resolution``, staying uint8.

    Done once up front so that per-batch work is only augmentation and
    normalisation.  Bilinear, antialiased when shrinking, in chunks so the
    float32 temporaries stay small.  Non-square images are stretched.
    """
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < MIN_RESOLUTION:
        raise DataError(f"resolution {resolution!r} invalid; expected an int >= {MIN_RESOLUTION}")
    height, width = ds.image_size
    if (height, width) == (resolution, resolution):
        return ds
    antialias = resolution < height or resolution < width
    out = torch.empty((len(ds), ds.in_channels, resolution, resolution), dtype=torch.uint8)
    for start in range(0, len(ds), _CHUNK):
        chunk = ds.images[start:start + _CHUNK].to(torch.float32)
        resized = F.interpolate(
            chunk, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=antialias
        )
        out[start:start + _CHUNK] = resized.round_().clamp_(0, 255).to(torch.uint8)
    return ImageDataset(out, ds.labels, ds.classes, ds.name)


def channel_stats(ds: ImageDataset) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of pixel values scaled to [0, 1].

    Accumulated in float64 over chunks, so it is exact enough and never holds
    a float copy of the dataset.  The std is floored at 1/255 (one grey level)
    so that normalising a constant channel cannot divide by zero.
    """
    if len(ds) == 0:
        raise DataError(f"{ds.name}: cannot compute channel statistics of an empty dataset")
    total = torch.zeros(ds.in_channels, dtype=torch.float64)
    total_sq = torch.zeros(ds.in_channels, dtype=torch.float64)
    for start in range(0, len(ds), _CHUNK):
        chunk = ds.images[start:start + _CHUNK].to(torch.float64)
        total += chunk.sum(dim=(0, 2, 3))
        total_sq += chunk.square().sum(dim=(0, 2, 3))
    count = len(ds) * ds.image_size[0] * ds.image_size[1]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_(min=0).sqrt_().clamp_(min=1.0)
    return tuple((mean / 255).tolist()), tuple((std / 255).tolist())




@dataclass(frozen=True, eq=False)
class DataSplits:
    """Train / minival / test of one dataset, prepared at one resolution, with train statistics."""

    train: ImageDataset
    minival: ImageDataset
    test: ImageDataset
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    @property
    def in_channels(self) -> int:
        return self.train.in_channels

    @property
    def resolution(self) -> int:
        return self.train.image_size[0]


def load_splits(
    name: str,
    root: str | os.PathLike[str] | None = None,
    resolution: int = 32,
    minival_size: int | float = 0.1,
    train_size: int | None = None,
    seed: int = 0,
    download: bool = False,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **kwargs: object,
) -> DataSplits:
    """Load a dataset's train/minival/test, prepared at ``resolution``.

    Minival is carved out of the official training split (seeded); the
    official test split stays apart.  ``train_size`` then keeps a seeded
    subset of the remaining training part -- the cheap proxy task of the
    search.  Normalisation statistics come from that training part unless
    ``mean`` and ``std`` are both given.  ``kwargs`` go to :func:`load_dataset`.
    """
    if (mean is None) != (std is None):
        raise DataError("mean and std must be given together or not at all")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < MIN_RESOLUTION:
        raise DataError(f"resolution {resolution!r} invalid; expected an int >= {MIN_RESOLUTION}")
    full_train = load_dataset(name, root, "train", download, **kwargs)  # type: ignore[arg-type]
    test_kwargs = _without_download_options(kwargs)
    test = load_dataset(name, root, "test", False, **test_kwargs)  # type: ignore[arg-type]
    if test.classes != full_train.classes or test.in_channels != full_train.in_channels:
        raise DataError(
            f"{name}: test split has {test.in_channels} channel(s) and classes {list(test.classes)}, "
            f"expected {full_train.in_channels} and {list(full_train.classes)} as in the train split"
        )
    train, minival = split_train_minival(full_train, minival_size, seed)
    if train_size is not None:
        valid = isinstance(train_size, int) and not isinstance(train_size, bool)
        if not valid or not 0 < train_size <= len(train):
            raise DataError(
                f"train_size {train_size!r} invalid; expected an int between 1 and {len(train)} "
                f"(the {name} training images left after the minival split)"
            )
        train = train.subset(_seeded_permutation(len(train), seed)[:train_size].sort().values)
    train, minival, test = (prepare(d, resolution) for d in (train, minival, test))
    if mean is None or std is None:
        mean, std = channel_stats(train)
    elif len(mean) != train.in_channels or len(std) != train.in_channels:
        raise DataError(
            f"mean {tuple(mean)} / std {tuple(std)} invalid; "
            f"expected {train.in_channels} value(s) each"
        )
    return DataSplits(train, minival, test, tuple(float(m) for m in mean), tuple(float(s) for s in std), name)


def _without_download_options(kwargs: Mapping[str, object]) -> dict[str, object]:
    """The test split reuses what the train load downloaded, so no download options apply."""
    return {k: v for k, v in kwargs.items() if k not in ("base_url", "md5s")}
