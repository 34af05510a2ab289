"""Train / minival / test of one dataset at one resolution, with training-set statistics."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

import torch
import torch.nn.functional as F

from .core import MIN_RESOLUTION, RESIZE_CHUNK, DataError, ImageDataset, check_memory
from .registry import Located, locate

__all__ = ["DataSplits", "TestSplit", "channel_stats", "load_splits", "prepare", "split_train_minival"]

_CHUNK = RESIZE_CHUNK  # images per chunk in prepare/channel_stats: bounds float32 temporaries




def _seeded_permutation(n: int, seed: int) -> torch.Tensor:
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise DataError(f"seed {seed!r} invalid; expected an int")
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def _split_indices(n: int, minival_size: int | float, seed: int, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted (train, minival) indices of a seeded minival split of ``n`` training images."""
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
            f"minival_size {minival_size!r} gives {count} of {n} {name} training images; "
            f"expected between 1 and {n - 1}"
        )
    perm = _seeded_permutation(n, seed)
    return perm[count:].sort().values, perm[:count].sort().values


def _keep_train(train_idx: torch.Tensor, train_size: int | None, seed: int, name: str) -> torch.Tensor:
    """The seeded ``train_size`` subset (still sorted) of the training indices left after minival."""
    if train_size is None:
        return train_idx
    valid = isinstance(train_size, int) and not isinstance(train_size, bool)
    if not valid or not 0 < train_size <= len(train_idx):
        raise DataError(
            f"train_size {train_size!r} invalid; expected an int between 1 and {len(train_idx)} "
            f"(the {name} training images left after the minival split)"
        )
    return train_idx[_seeded_permutation(len(train_idx), seed)[:train_size].sort().values]


def split_train_minival(
    ds: ImageDataset, minival_size: int | float, seed: int
) -> tuple[ImageDataset, ImageDataset]:
    """Carve a seeded random minival set out of a training set.

    The search ranks architectures on minival so that the official test split
    is never looked at.  ``minival_size`` is a count (int) or a fraction in
    (0, 1) (float).  The same seed always yields the same split; both parts
    keep the original file order.
    """
    train_idx, minival_idx = _split_indices(len(ds), minival_size, seed, ds.name)
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
    """Train / minival / test of one dataset, prepared at one resolution, with train statistics.

    ``test`` is None when it was not asked for (the searches never look at it) or, with
    ``test="if_present"``, when the dataset has none (a plain image folder)."""

    train: ImageDataset
    minival: ImageDataset
    test: ImageDataset | None
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


TestSplit = Union[bool, Literal["if_present"]]


def load_splits(
    name: str,
    root: str | os.PathLike[str] | None = None,
    resolution: int = 32,
    minival_size: int | float = 0.1,
    train_size: int | None = None,
    seed: int = 0,
    download: bool = False,
    *,
    test: TestSplit = True,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **kwargs: Any,
) -> DataSplits:
    """Load a dataset's train/minival (and test) splits, prepared at ``resolution``.

    Minival is carved out of the official training split (seeded); the
    official test split stays apart.  ``train_size`` then keeps a seeded
    subset of the remaining training part -- the cheap proxy task of the
    search.  ``test``: True loads the test split (an error if the dataset has
    none), False leaves it unread (``DataSplits.test`` is None), "if_present"
    loads it where the dataset has one.  Normalisation statistics come from the
    training part unless ``mean`` and ``std`` are both given.  ``kwargs`` are
    the source's options and ``base_url`` / ``md5s`` (see :func:`load_dataset`);
    anything else is a :class:`DataError`.

    Sources that decode files (``image_folder``) are surveyed first: only the
    images used are decoded, straight at ``resolution`` unless ``image_size``
    says otherwise, and a request that cannot fit in the available memory is
    refused in one line before anything is decoded.
    """
    if (mean is None) != (std is None):
        raise DataError("mean and std must be given together or not at all")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < MIN_RESOLUTION:
        raise DataError(f"resolution {resolution!r} invalid; expected an int >= {MIN_RESOLUTION}")
    if not (test is True or test is False or test == "if_present"):
        raise DataError(f"test={test!r} invalid; expected True, False or 'if_present'")
    if "split" in kwargs:
        raise DataError(f"{name}: split is not an option of load_splits (it loads train and minival, and test "
                        "with test=True); load one split with load_dataset(name, root, split)")
    located = locate(name, root, download, **kwargs)
    want_test = test is True or (test == "if_present" and "test" in located.available_splits())
    if located.source.survey is None:
        full_train = located.load("train")
        train_idx, minival_idx = _split_indices(len(full_train), minival_size, seed, name)
        train_idx = _keep_train(train_idx, train_size, seed, name)
        train, minival = full_train.subset(train_idx), full_train.subset(minival_idx)
        del full_train
        test_ds = located.load("test") if want_test else None
    else:
        train, minival, test_ds = _load_surveyed(located, resolution, minival_size, train_size, seed, want_test)
    if test_ds is not None and (test_ds.classes != train.classes or test_ds.in_channels != train.in_channels):
        raise DataError(
            f"{name}: test split has {test_ds.in_channels} channel(s) and classes {list(test_ds.classes)}, "
            f"expected {train.in_channels} and {list(train.classes)} as in the train split"
        )
    train, minival = prepare(train, resolution), prepare(minival, resolution)
    test_ds = prepare(test_ds, resolution) if test_ds is not None else None
    if mean is None or std is None:
        mean, std = channel_stats(train)
    elif len(mean) != train.in_channels or len(std) != train.in_channels:
        raise DataError(
            f"mean {tuple(mean)} / std {tuple(std)} invalid; "
            f"expected {train.in_channels} value(s) each"
        )
    return DataSplits(train, minival, test_ds, tuple(float(m) for m in mean), tuple(float(s) for s in std), name)


def _load_surveyed(
    located: Located, resolution: int, minival_size: int | float, train_size: int | None, seed: int, want_test: bool
) -> tuple[ImageDataset, ImageDataset, ImageDataset | None]:
    """Train, minival (and test) of a source that decodes files: count, check memory, decode only
    the chosen images. Same images, same order as splitting the whole decoded training split."""
    name = located.source.name
    test_survey = located.survey("test", resolution) if want_test else None  # first: no test split, no work
    survey = located.survey("train", resolution)
    train_idx, minival_idx = _split_indices(survey.count, minival_size, seed, name)
    train_idx = _keep_train(train_idx, train_size, seed, name)
    parts = [("train", len(train_idx), survey), ("minival", len(minival_idx), survey)]
    if test_survey is not None:
        parts.append(("test", test_survey.count, test_survey))
    need = sum(s.resident_bytes(n, resolution) for _, n, s in parts) + max(s.peak_bytes for _, _, s in parts)
    height, width = survey.size
    resized = "" if (height, width) == (resolution, resolution) else f", resized to {resolution}x{resolution}"
    image_size = located.options.get("image_size")
    check_memory(
        need,
        f"{name}: decoding {' + '.join(f'{n:,} {label}' for label, n, _ in parts)} images at "
        f"{survey.channels}x{height}x{width}{resized}",
        f"lower proxy.train_size (now {'all' if train_size is None else f'{train_size:,}'}), proxy.minival_size "
        f"(now {len(minival_idx):,}), proxy.resolution (now {resolution}) or dataset.image_size "
        f"(now {'null: decoded straight at proxy.resolution' if image_size is None else image_size})",
    )
    both = located.load("train", indices=torch.cat([train_idx, minival_idx]), resolution=resolution)
    cut = len(train_idx)  # views of one tensor: no copy
    train = ImageDataset(both.images[:cut], both.labels[:cut], both.classes, both.name)
    minival = ImageDataset(both.images[cut:], both.labels[cut:], both.classes, both.name)
    test_ds = located.load("test", resolution=resolution) if want_test else None
    return train, minival, test_ds
