"""A folder of PNG/JPEG images, one sub-folder per class (optionally ``train/`` and ``test/``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from PIL import Image

from ..core import DataError, ImageDataset, Split, one_line
from ..registry import DatasetConfig, Source, register

__all__ = ["ImageFolderConfig"]

_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


@dataclass
class ImageFolderConfig(DatasetConfig):
    image_size: Optional[Any] = None  # null: the size of the first image; an int or [height, width]




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


def _open_image(path: Path, decode: bool) -> Image.Image:
    try:
        image = Image.open(path)
        if decode:
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


def _target_size(image_size: int | tuple[int, int] | None, first: Path) -> tuple[int, int]:
    """(height, width): the given size, else that of the first image."""
    if image_size is None:
        with _open_image(first, decode=False) as image:
            return image.height, image.width
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size):
        raise DataError(f"image_size {image_size!r} invalid; expected a positive int or (height, width)")
    return size[0], size[1]


def _decode_images(files: Sequence[Path], mode: str, size: tuple[int, int]) -> torch.Tensor:
    height, width = size
    out = np.empty((len(files), height, width, 1 if mode == "L" else 3), dtype=np.uint8)
    for i, path in enumerate(files):
        with _open_image(path, decode=True) as image:
            converted = image.convert(mode)
            if converted.size != (width, height):
                converted = converted.resize((width, height), Image.Resampling.BILINEAR)
            out[i] = np.asarray(converted).reshape(height, width, -1)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _load_image_folder(root: Path, split: Split, image_size: int | tuple[int, int] | None) -> ImageDataset:
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
        raise DataError(
            f"image_folder: {train_dir} has {len(classes)} class folder(s) {classes}; "
            "expected at least 2 sub-folders, one per class"
        )
    train_items = _scan_split(train_dir, classes)
    test_items = _scan_split(test_dir, classes) if split_layout and test_dir.is_dir() else []
    items = train_items if split == "train" else test_items
    if not items:
        raise DataError(f"image_folder: {test_dir} holds no images; expected <class>/<images> inside")
    # Mode and size are decided over both splits so that train and test always agree.
    mode = _image_mode([path for path, _ in train_items + test_items])
    size = _target_size(image_size, train_items[0][0])
    images = _decode_images([path for path, _ in items], mode, size)
    labels = torch.tensor([label for _, label in items], dtype=torch.int64)
    return ImageDataset(images, labels, tuple(classes), "image_folder")



register(Source("image_folder", lambda name, root, split, image_size=None: _load_image_folder(root, split, image_size),
                options=("image_size",), config=ImageFolderConfig(name="image_folder", flip=True)))
