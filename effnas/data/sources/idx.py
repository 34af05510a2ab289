"""MNIST-style IDX files (MNIST, Fashion-MNIST): strict parsing and MD5-checked downloads."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..core import DataError, ImageDataset, MissingData, Split, one_line
from ..registry import DatasetConfig, Source, register

__all__ = ["FASHION_MNIST_CLASSES", "IDX_FILES", "IDX_SOURCES", "IdxSource", "MNIST_CLASSES", "download_idx",
           "read_idx"]

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
MNIST_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))

IDX_FILES: dict[Split, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
"""Standard IDX file names (without ``.gz``) for images and labels of each split."""

_IDX_IMAGES_MAGIC = 0x00000803  # uint8 data, 3 dimensions
_IDX_LABELS_MAGIC = 0x00000801  # uint8 data, 1 dimension



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
        raise DataError(f"{path}: cannot read file ({one_line(exc.strerror or exc)})") from exc
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"{path}: not a valid gzip file ({one_line(exc)}); "
            "expected a gzipped IDX file"
        ) from exc


def _find_idx(root: Path, stem: str, name: str) -> Path:
    """Prefer ``stem.gz`` (what the mirrors ship), fall back to the decompressed file."""
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    wanted = ", ".join(f"{s}[.gz]" for pair in IDX_FILES.values() for s in pair)
    raise MissingData(f"{name}: {stem}[.gz] not found in {root}; expected the files {wanted} there")


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
        raise DataError(f"{name}: cannot create download directory {root} ({one_line(exc)})") from exc
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
                raise DataError(f"download of {url} failed ({one_line(reason)})") from exc
        if digest.hexdigest() != md5:
            raise DataError(
                f"download of {url} has MD5 {digest.hexdigest()}, expected {md5}; "
                f"nothing was written to {dest}"
            )
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()



def _loader(classes: tuple[str, ...]):
    def load(name: str, root: Path, split: Split) -> ImageDataset:
        return _load_idx_dataset(name, root, split, classes)
    return load


def _download(name: str):
    def download(root: Path, *, base_url: str | None = None, md5s: Mapping[str, str] | None = None) -> list[Path]:
        return download_idx(name, root, base_url=base_url, md5s=md5s)
    return download


register(Source(
    "fashion_mnist", _loader(FASHION_MNIST_CLASSES), download=_download("fashion_mnist"),
    default_root=Path("/usr/share/datasets/fashion-mnist"), debian_package="dataset-fashion-mnist",
    config=DatasetConfig(name="fashion_mnist", root=None, flip=True)))
register(Source("mnist", _loader(MNIST_CLASSES), download=_download("mnist"),
                config=DatasetConfig(name="mnist", flip=False)))  # a flipped digit is another digit
