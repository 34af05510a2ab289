"""A folder of PNG/JPEG images, one sub-folder per class (optionally ``train/`` and ``test/``).

A plain ``root/<class>/<images>`` folder (torchvision's ImageFolder layout) is a training split
only; ``root/train/<class>/`` and ``root/test/<class>/`` add a test split. Images are decoded one by
one straight into the ``N x C x H x W`` uint8 tensor at the size they are used at (JPEGs through
PIL's DCT scaling), so memory follows that size, not the files' native one; a progress line is
logged every :data:`PROGRESS_INTERVAL` seconds while decoding.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from PIL import Image

from ..core import DataError, ImageDataset, MissingData, Split, Survey, one_line
from ..registry import DatasetConfig, Source, register

__all__ = ["ImageFolderConfig", "PROGRESS_INTERVAL"]

_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_HEADER_SAMPLE = 64  # image headers read (evenly spread) to estimate the largest single-image decode

PROGRESS_INTERVAL = 5.0
"""Seconds between "decoding image_folder ..." progress lines (logger ``effnas``)."""

log = logging.getLogger("effnas")


@dataclass
class ImageFolderConfig(DatasetConfig):
    # null: decoded straight at the resolution the run trains at (load_dataset alone: the first
    # image's size); an int or [height, width] decodes at that size first, then resizes
    image_size: Optional[Any] = None


def _class_dirs(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(class_dir: Path) -> list[Path]:
    files = sorted(
        p for p in class_dir.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in _IMAGE_SUFFIXES
    )
    if not files:
        raise DataError(
            f"image_folder: class folder {class_dir} has no .png/.jpg/.jpeg images; "
            "expected at least 1"
        )
    return files


def _scan_split(directory: Path, classes: Sequence[str]) -> list[tuple[Path, int]]:
    """(file, label) pairs of one split; a class folder may be absent (e.g. from a test split)."""
    present = set(_class_dirs(directory))
    unknown = sorted(present - set(classes))
    if unknown:
        raise DataError(
            f"image_folder: {directory} has class folder(s) {unknown} not among the training "
            f"classes {list(classes)}"
        )
    return [
        (path, label)
        for label, cls in enumerate(classes) if cls in present
        for path in _image_files(directory / cls)
    ]


def _open_image(path: Path, decode: bool, draft: tuple[str, tuple[int, int]] | None = None) -> Image.Image:
    """Open ``path``; with ``draft=(mode, (width, height))`` a JPEG is decoded at the smallest DCT
    scale (1/2, 1/4, 1/8) that still covers that size -- far less memory and time for large photos."""
    try:
        image = Image.open(path)
        if decode:
            if draft is not None and image.format == "JPEG":
                image.draft(*draft)
            image.load()
        return image
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(
            f"{path}: cannot read image ({one_line(exc)}); "
            "expected a readable PNG or JPEG"
        ) from exc


def _image_mode(paths: Sequence[Path]) -> str:
    """L when every image is grayscale (headers only, no decoding), else RGB."""
    for path in paths:
        with _open_image(path, decode=False) as image:
            if image.mode not in _GRAY_MODES:
                return "RGB"
    return "L"


def _decode_peak(paths: Sequence[Path]) -> int:
    """Bytes of decoding one image at its native size (PIL holds 4 bytes a pixel, and converting
    makes a second copy), for the largest of a sample of headers spread over ``paths``."""
    step = max(1, len(paths) // _HEADER_SAMPLE)
    largest = 0
    for path in paths[::step]:
        with _open_image(path, decode=False) as image:
            largest = max(largest, image.width * image.height)
    return 2 * 4 * largest


def _target_size(image_size: int | Sequence[int] | None, resolution: int | None, first: Path) -> tuple[int, int]:
    """(height, width): the given size, else ``resolution`` squared, else that of the first image."""
    if image_size is None:
        if resolution is not None:
            return resolution, resolution
        with _open_image(first, decode=False) as image:
            return image.height, image.width
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size):
        raise DataError(f"image_size {image_size!r} invalid; expected a positive int or (height, width)")
    return size[0], size[1]


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _decode_images(files: Sequence[Path], mode: str, size: tuple[int, int],
                   label: str = "image_folder") -> torch.Tensor:
    """Decode ``files`` into one ``N x C x height x width`` uint8 tensor, resizing each image
    (bilinear, antialiased when shrinking) right after decoding: nothing else is held."""
    height, width = size
    n = len(files)
    out = torch.empty((n, 1 if mode == "L" else 3, height, width), dtype=torch.uint8)
    view = out.numpy()
    start = last = time.monotonic()
    for i, path in enumerate(files):
        with _open_image(path, decode=True, draft=(mode, (width, height))) as image:
            converted = image.convert(mode)
            if converted.size != (width, height):
                converted = converted.resize((width, height), Image.Resampling.BILINEAR)
            view[i] = np.asarray(converted).reshape(height, width, -1).transpose(2, 0, 1)
        now = time.monotonic()
        if now - last >= PROGRESS_INTERVAL and i + 1 < n:
            last, done = now, i + 1
            eta = (now - start) / done * (n - done)
            log.info("decoding %s: %s/%s images (%d%%), ETA %s", label, f"{done:,}", f"{n:,}",
                     100 * done // n, _duration(eta))
    if last != start:  # progress was shown: say when it is done
        log.info("decoding %s: %s images in %s", label, f"{n:,}", _duration(time.monotonic() - start))
    return out


def _folder_splits(root: Path) -> tuple[str, ...]:
    """train and test with root/train/ and root/test/; a plain class folder is a training split only."""
    return ("train", "test") if (root / "train").is_dir() and (root / "test").is_dir() else ("train",)


def _listing(root: Path, split: Split) -> tuple[tuple[str, ...], list[tuple[Path, int]], list[tuple[Path, int]]]:
    """Classes, the training items and the test items (empty without root/test/), as (file, label)."""
    split_layout = (root / "train").is_dir()
    train_dir = root / "train" if split_layout else root
    test_dir = root / "test"
    if split == "test" and not split_layout:
        raise DataError(
            f"image_folder: {root} has no train/ and test/ sub-folders, so it has no test split; "
            "lay it out as root/train/<class>/ and root/test/<class>/ or load split='train'"
        )
    if split == "test" and not test_dir.is_dir():
        raise DataError(
            f"image_folder: {root} has train/ but no test/ folder; "
            f"expected {test_dir}/<class>/<images>"
        )
    classes = _class_dirs(train_dir)
    if len(classes) < 2:
        error = MissingData if not classes else DataError
        raise error(
            f"image_folder: {train_dir} has {len(classes)} class folder(s) {classes}; "
            "expected at least 2 sub-folders, one per class"
        )
    train_items = _scan_split(train_dir, classes)
    test_items = _scan_split(test_dir, classes) if split_layout and test_dir.is_dir() else []
    if split == "test" and not test_items:
        raise DataError(f"image_folder: {test_dir} holds no images; expected <class>/<images> inside")
    return tuple(classes), train_items, test_items


def _plan(root: Path, split: Split, image_size: Any, resolution: int | None):
    classes, train_items, test_items = _listing(root, split)
    # Mode and size are decided over both splits so that train and test always agree.
    mode = _image_mode([path for path, _ in train_items + test_items])
    size = _target_size(image_size, resolution, train_items[0][0])
    return classes, (train_items if split == "train" else test_items), mode, size


def _survey(name: str, root: Path, split: Split, image_size: Any = None, *, resolution: int | None = None) -> Survey:
    _, items, mode, size = _plan(root, split, image_size, resolution)
    return Survey(len(items), 1 if mode == "L" else 3, size, _decode_peak([path for path, _ in items]))


def _load_image_folder(root: Path, split: Split, image_size: Any = None, *,
                       indices: Sequence[int] | torch.Tensor | None = None,
                       resolution: int | None = None) -> ImageDataset:
    classes, items, mode, size = _plan(root, split, image_size, resolution)
    if indices is not None:
        chosen = [int(i) for i in indices]
        if chosen and not 0 <= min(chosen) <= max(chosen) < len(items):
            raise DataError(f"image_folder: indices span {min(chosen)}..{max(chosen)}, expected 0..{len(items) - 1}")
        items = [items[i] for i in chosen]
    images = _decode_images([path for path, _ in items], mode, size, f"image_folder ({split})")
    labels = torch.tensor([label for _, label in items], dtype=torch.int64)
    return ImageDataset(images, labels, classes, "image_folder")


register(Source(
    "image_folder",
    lambda name, root, split, image_size=None, **kw: _load_image_folder(root, split, image_size, **kw),
    options=("image_size",), config=ImageFolderConfig(name="image_folder", flip=True),
    splits=_folder_splits, survey=_survey))
