"""Image datasets held in memory as uint8 tensors and batched with tensor ops.

The search trains many small networks on CPU, so data handling must cost next
to nothing per step: every dataset is decoded once into an ``N x C x H x W``
uint8 tensor, resized once to the search resolution (:func:`prepare`), and
batched by indexing that tensor (:class:`Batches`).  No per-image Python runs
in the training loop.

Loaders (:func:`load_dataset`) read real files only -- MNIST/Fashion-MNIST IDX
files, the CIFAR-10 "python version" pickles, or a folder of PNG/JPEG images
-- and reject anything malformed with a :class:`DataError` whose message is a
single line naming the file or value at fault and what was expected.
:func:`load_splits` ties it together: train / minival / test, prepared at one
resolution, with normalisation statistics from the training part only.

This module is the bottom layer of ``nas``: it imports nothing from the rest
of the project.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import os
import pickle
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = [
    "CIFAR10_CLASSES",
    "DATASET_NAMES",
    "DEFAULT_ROOTS",
    "FASHION_MNIST_CLASSES",
    "IDX_FILES",
    "IDX_SOURCES",
    "MIN_RESOLUTION",
    "MNIST_CLASSES",
    "Batches",
    "DataError",
    "DataSplits",
    "IdxSource",
    "ImageDataset",
    "channel_stats",
    "download_idx",
    "load_dataset",
    "load_splits",
    "prepare",
    "read_idx",
    "split_train_minival",
]

Split = Literal["train", "test"]

DATASET_NAMES: tuple[str, ...] = ("cifar10", "fashion_mnist", "image_folder", "mnist")
"""Names accepted by :func:`load_dataset`."""

MIN_RESOLUTION = 32
"""Smallest resolution :func:`prepare` accepts: the search space downsamples 32x."""

DEFAULT_ROOTS: dict[str, Path] = {
    "fashion_mnist": Path("/usr/share/datasets/fashion-mnist"),
}
"""Where a dataset is read from when ``root`` is None (Debian's dataset package)."""

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
MNIST_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)

IDX_FILES: dict[Split, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
"""Standard IDX file names (without ``.gz``) for images and labels of each split."""

_IDX_IMAGES_MAGIC = 0x00000803  # uint8 data, 3 dimensions
_IDX_LABELS_MAGIC = 0x00000801  # uint8 data, 1 dimension
_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
_CHUNK = 4096  # images per chunk in prepare/channel_stats: bounds float32 temporaries


class DataError(ValueError):
    """Bad data or a bad data argument; the message is one line saying what and what is valid."""


@dataclass(frozen=True)
class IdxSource:
    """Where the IDX ``.gz`` files of a dataset are downloaded from and their MD5s."""

    base_url: str
    md5s: Mapping[str, str]


IDX_SOURCES: dict[str, IdxSource] = {
    "mnist": IdxSource(
        base_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
        md5s={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion_mnist": IdxSource(
        base_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        md5s={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
}
"""Official download mirrors and MD5s (torchvision's) of the MNIST-style datasets.

Override per call with ``base_url`` / ``md5s`` or by replacing an entry here.
"""


def _one_line(text: object) -> str:
    """Collapse whitespace so that messages built from exceptions stay on one line."""
    return " ".join(str(text).split())


# --------------------------------------------------------------------------- dataset


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


# --------------------------------------------------------------------------- IDX (MNIST family)


def read_idx(path: str | os.PathLike[str], kind: Literal["images", "labels"]) -> torch.Tensor:
    """Parse one uint8 IDX file (``.gz`` or raw) strictly into a uint8 tensor.

    ``kind="images"`` expects magic 0x00000803 and returns ``N x 1 x H x W``;
    ``kind="labels"`` expects 0x00000801 and returns ``N``.  The file size must
    match the header exactly, so truncated or padded files are caught here
    rather than showing up as garbage images.
    """
    if kind not in ("images", "labels"):
        raise DataError(f"IDX kind {kind!r} invalid; expected 'images' or 'labels'")
    path = Path(path)
    data = _read_maybe_gzip(path)
    expected_magic, ndim = (_IDX_IMAGES_MAGIC, 3) if kind == "images" else (_IDX_LABELS_MAGIC, 1)
    header = 4 + 4 * ndim
    if len(data) < 4:
        raise DataError(f"{path}: IDX file truncated: {len(data)} bytes, expected at least {header}")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise DataError(
            f"{path}: bad IDX magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
            f"(uint8 {kind}, {ndim} dimension{'s' if ndim > 1 else ''})"
        )
    if len(data) < header:
        raise DataError(f"{path}: IDX header truncated: {len(data)} bytes, expected at least {header}")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if kind == "images" and (dims[1] == 0 or dims[2] == 0):
        raise DataError(f"{path}: IDX image size {dims[1]}x{dims[2]}, expected both sides >= 1")
    expected = header + math.prod(dims)
    if len(data) < expected:
        raise DataError(
            f"{path}: IDX file truncated: {len(data)} bytes, expected {expected} for shape {dims}"
        )
    if len(data) > expected:
        raise DataError(
            f"{path}: IDX file has {len(data) - expected} trailing bytes; expected exactly "
            f"{expected} bytes for shape {dims}"
        )
    array = np.frombuffer(data, dtype=np.uint8, count=math.prod(dims), offset=header)
    tensor = torch.from_numpy(array.copy())  # copy: frombuffer views read-only bytes
    return tensor.reshape(dims[0], 1, dims[1], dims[2]) if kind == "images" else tensor


def _read_maybe_gzip(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({_one_line(exc.strerror or exc)})") from exc
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"{path}: not a valid gzip file ({_one_line(exc)}); "
            "expected a gzipped IDX file"
        ) from exc


def _find_idx(root: Path, stem: str, name: str) -> Path:
    """Prefer ``stem.gz`` (what the mirrors ship), fall back to the decompressed file."""
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    wanted = ", ".join(f"{s}[.gz]" for pair in IDX_FILES.values() for s in pair)
    raise DataError(
        f"{name}: {stem}[.gz] not found in {root}; expected the files {wanted} there "
        "(pass download=True to fetch them)"
    )


def _load_idx_dataset(name: str, root: Path, split: Split, classes: tuple[str, ...]) -> ImageDataset:
    images_stem, labels_stem = IDX_FILES[split]
    images_path, labels_path = _find_idx(root, images_stem, name), _find_idx(root, labels_stem, name)
    images = read_idx(images_path, "images")
    labels = read_idx(labels_path, "labels")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_path} has {images.shape[0]} images but {labels_path} has {labels.shape[0]} "
            "labels; expected equal counts"
        )
    if images.shape[0] == 0:
        raise DataError(f"{images_path}: holds 0 images; expected at least 1")
    bad = torch.nonzero(labels >= len(classes))
    if bad.numel():
        i = int(bad[0, 0])
        raise DataError(
            f"{labels_path}: label {int(labels[i])} at index {i} out of range, "
            f"expected 0..{len(classes) - 1}"
        )
    return ImageDataset(images, labels.to(torch.int64), classes, name)


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_idx(
    name: str,
    root: str | os.PathLike[str],
    *,
    base_url: str | None = None,
    md5s: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> list[Path]:
    """Download the four IDX ``.gz`` files of ``name`` into ``root``, verified by MD5.

    Files already present with the right MD5 are kept.  Each download goes to a
    temporary file in ``root`` that is renamed into place only after its MD5
    matches, so an interrupted or corrupt download never leaves a file a later
    load would trust.  Uses urllib only (honours the usual proxy variables).
    Returns the paths of the four files.
    """
    if name not in IDX_SOURCES:
        raise DataError(f"cannot download {name!r}; downloads exist for: {', '.join(sorted(IDX_SOURCES))}")
    source = IDX_SOURCES[name]
    base = (base_url if base_url is not None else source.base_url).rstrip("/") + "/"
    expected = dict(md5s if md5s is not None else source.md5s)
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{name}: cannot create download directory {root} ({_one_line(exc)})") from exc
    paths = []
    for stem in (s for pair in IDX_FILES.values() for s in pair):
        filename = f"{stem}.gz"
        if filename not in expected:
            raise DataError(f"{name}: no MD5 given for {filename}; md5s must cover all four IDX .gz files")
        dest = root / filename
        if not (dest.is_file() and _md5(dest) == expected[filename].lower()):
            _download_verified(base + filename, dest, expected[filename].lower(), timeout)
        paths.append(dest)
    return paths


def _download_verified(url: str, dest: Path, md5: str, timeout: float) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise DataError(f"download of {url} failed ({_one_line(reason)})") from exc
        if digest.hexdigest() != md5:
            raise DataError(
                f"download of {url} has MD5 {digest.hexdigest()}, expected {md5}; "
                f"nothing was written to {dest}"
            )
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


# --------------------------------------------------------------------------- CIFAR-10


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
            f"{path}: cannot unpickle ({_one_line(exc)}); "
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
        raise DataError(f"{path}: b'labels' is not a list of ints ({_one_line(exc)})") from exc
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
        raise DataError(
            f"cifar10: {', '.join(missing)} not found in {directory}; expected data_batch_1..5 and "
            "test_batch (the CIFAR-10 python version) in root or root/cifar-10-batches-py"
        )
    classes = _cifar_classes(directory)
    parts = [_cifar_batch(directory / f, len(classes)) for f in files]
    images = torch.cat([p[0] for p in parts])
    if images.shape[0] == 0:
        raise DataError(f"cifar10: {directory} holds 0 {split} images; expected at least 1")
    return ImageDataset(images, torch.cat([p[1] for p in parts]), classes, "cifar10")


# --------------------------------------------------------------------------- image folder


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
            f"{path}: cannot read image ({_one_line(exc)}); "
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


# --------------------------------------------------------------------------- dispatch


def _resolve_root(name: str, root: str | os.PathLike[str] | None, must_exist: bool) -> Path:
    if root is None:
        if name not in DEFAULT_ROOTS:
            raise DataError(
                f"{name}: root=None but {name} has no default location; pass root=<directory> "
                f"(defaults exist for: {', '.join(sorted(DEFAULT_ROOTS))})"
            )
        root = DEFAULT_ROOTS[name]
    path = Path(root).expanduser()
    if must_exist and not path.is_dir():
        raise DataError(f"{name}: root {path} is not an existing directory; expected the dataset's directory")
    return path


def load_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    split: Split = "train",
    download: bool = False,
    *,
    image_size: int | tuple[int, int] | None = None,
    base_url: str | None = None,
    md5s: Mapping[str, str] | None = None,
) -> ImageDataset:
    """Load one split of a dataset by name from real files.

    ``name`` is one of :data:`DATASET_NAMES`.  ``download=True`` (MNIST and
    Fashion-MNIST only) first fetches missing or corrupt IDX files into
    ``root`` via :func:`download_idx`, with ``base_url`` / ``md5s`` overriding
    :data:`IDX_SOURCES`.  ``image_size`` (``image_folder`` only) fixes the
    common (height, width); by default it is the first training image's size.
    """
    if name not in DATASET_NAMES:
        raise DataError(f"unknown dataset {name!r}; expected one of: {', '.join(DATASET_NAMES)}")
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}; expected 'train' or 'test'")
    if download and name not in IDX_SOURCES:
        raise DataError(
            f"{name}: download=True is not supported; "
            f"downloads exist for: {', '.join(sorted(IDX_SOURCES))}"
        )
    if image_size is not None and name != "image_folder":
        raise DataError(
            f"{name}: image_size applies only to image_folder; "
            "resize with prepare(ds, resolution)"
        )
    if (base_url is not None or md5s is not None) and not download:
        raise DataError(f"{name}: base_url/md5s only apply with download=True")
    path = _resolve_root(name, root, must_exist=not download)
    if download:
        download_idx(name, path, base_url=base_url, md5s=md5s)
    if name == "fashion_mnist":
        return _load_idx_dataset(name, path, split, FASHION_MNIST_CLASSES)
    if name == "mnist":
        return _load_idx_dataset(name, path, split, MNIST_CLASSES)
    if name == "cifar10":
        return _load_cifar10(path, split)
    return _load_image_folder(path, split, image_size)


# --------------------------------------------------------------------------- splits and preprocessing


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


# --------------------------------------------------------------------------- batching


class Batches:
    """Mini-batches of a prepared dataset, built with tensor ops only.

    Iterating yields one epoch of ``(x, y)``: ``x`` float32 ``B x C x H x W``
    normalised with ``mean``/``std`` (given on the [0, 1] scale), in
    channels_last memory format when requested; ``y`` int64.  Each iteration
    reshuffles (if ``shuffle``) with one seeded generator, so a run is
    reproducible from its seed.  Augmentation (``augment``) is a random crop
    from the image zero-padded by ``pad`` pixels (default ``resolution / 8``)
    and, if ``flip``, a random horizontal flip -- both done as one gather.
    The uint8 data moves to ``device`` once, up front.
    """

    def __init__(
        self,
        ds: ImageDataset,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        shuffle: bool = False,
        augment: bool = False,
        *,
        seed: int = 0,
        generator: torch.Generator | None = None,
        flip: bool = True,
        pad: int | None = None,
        channels_last: bool = True,
        device: str | torch.device = "cpu",
        drop_last: bool = False,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DataError(f"batch_size {batch_size!r} invalid; expected a positive int")
        channels = ds.in_channels
        if len(mean) != channels or len(std) != channels:
            raise DataError(
                f"mean {tuple(mean)} / std {tuple(std)} invalid for {ds.name}; "
                f"expected {channels} value(s) each"
            )
        if not all(s > 0 for s in std):
            raise DataError(f"std {tuple(std)} invalid; expected every value > 0")
        height, width = ds.image_size
        pad = max(1, round(min(height, width) / 8)) if pad is None else pad
        if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
            raise DataError(f"pad {pad!r} invalid; expected an int >= 0")
        num_batches = len(ds) // batch_size if drop_last else math.ceil(len(ds) / batch_size)
        if num_batches == 0:
            raise DataError(
                f"{ds.name}: {len(ds)} images give no batch of size {batch_size}"
                f"{' with drop_last=True' if drop_last else ''}; expected at least one"
            )
        self.dataset = ds
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.flip = flip
        self.pad = pad
        self.channels_last = channels_last
        self.drop_last = drop_last
        self.device = torch.device(device)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)
        self._num_batches = num_batches
        self._images = ds.images.to(self.device)
        self._labels = ds.labels.to(self.device)
        std_t = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        # x_norm = (x/255 - mean)/std = x * scale + shift, applied in place on the batch.
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = -mean_t / std_t

    def __len__(self) -> int:
        return self._num_batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.dataset)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.device)
        for b in range(self._num_batches):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            images = self._images[idx]
            if self.augment:
                images = self._crop_and_flip(images)
            yield self._normalise(images), self._labels[idx]

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        x = images.to(torch.float32, memory_format=memory_format)
        return x.mul_(self._scale).add_(self._shift)

    def _crop_and_flip(self, images: torch.Tensor) -> torch.Tensor:
        """Random crop of the zero-padded batch plus optional flip, as one gather per batch."""
        count, _, height, width = images.shape
        pad = self.pad
        padded = F.pad(images, (pad, pad, pad, pad)) if pad else images
        offset_y = torch.randint(0, 2 * pad + 1, (count, 1), generator=self.generator)
        offset_x = torch.randint(0, 2 * pad + 1, (count, 1), generator=self.generator)
        rows = offset_y + torch.arange(height)
        cols = torch.arange(width).expand(count, width)
        if self.flip:
            flipped = torch.rand(count, 1, generator=self.generator) < 0.5
            cols = torch.where(flipped, cols.flip(1), cols)
        cols = offset_x + cols
        batch_index = torch.arange(count).view(count, 1, 1)
        rows, cols = rows.to(self.device), cols.to(self.device)
        # Advanced indices around the channel slice put their dims first: B x H x W x C.
        gathered = padded[batch_index.to(self.device), :, rows[:, :, None], cols[:, None, :]]
        return gathered.permute(0, 3, 1, 2)


# --------------------------------------------------------------------------- convenience


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
