"""The dataset registry: one :class:`Source` per dataset, registered by its module in
:mod:`effnas.data.sources` (adding a dataset is adding one module there).

A source knows how to load one split from a root folder, where the data lives by default, how to
download it (if it can) and its config node -- the ``dataset`` group option of every command.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

from omegaconf import MISSING

from ..schema import Schema
from .core import DataError, ImageDataset, Split

__all__ = ["DatasetConfig", "Source", "SOURCES", "register", "dataset_names", "get_source", "load_dataset",
           "resolve_root", "dataset_configs"]


@dataclass
class DatasetConfig(Schema):
    """The ``dataset`` config group (one option per registered source)."""

    _key: ClassVar[str] = "dataset"

    name: str = MISSING
    root: Optional[str] = MISSING  # the dataset's folder; null only where the source has a default
    download: bool = False         # fetch the official files into root first (checked by MD5)
    flip: bool = True              # random horizontal flips in training


@dataclass(frozen=True)
class Source:
    name: str
    load: Callable[..., ImageDataset]             # load(name, root, split, **options)
    config: DatasetConfig = field(default_factory=DatasetConfig)
    default_root: Path | None = None              # used when root is null (e.g. a Debian package)
    download: Callable[..., list[Path]] | None = None  # download(root, base_url=, md5s=)
    options: tuple[str, ...] = ()                 # extra keyword options load() accepts


SOURCES: dict[str, Source] = {}


def register(source: Source) -> Source:
    if source.name in SOURCES:
        raise ValueError(f"dataset {source.name!r} is registered twice")
    SOURCES[source.name] = source
    return source


def _discover() -> None:
    from . import sources  # noqa: F401 -- importing the package registers every source


def dataset_names() -> tuple[str, ...]:
    _discover()
    return tuple(sorted(SOURCES))


def get_source(name: str) -> Source:
    _discover()
    if name not in SOURCES:
        raise DataError(f"unknown dataset {name!r}; expected one of: {', '.join(dataset_names())}")
    return SOURCES[name]


def resolve_root(name: str, root: str | os.PathLike[str] | None, must_exist: bool) -> Path:
    source = get_source(name)
    if root is None:
        if source.default_root is None:
            defaults = [n for n in dataset_names() if SOURCES[n].default_root is not None]
            raise DataError(
                f"{name}: root=None but {name} has no default location; pass root=<directory> "
                f"(defaults exist for: {', '.join(defaults)})"
            )
        root = source.default_root
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
    base_url: str | None = None,
    md5s: Mapping[str, str] | None = None,
    **options: Any,
) -> ImageDataset:
    """Load one split of a registered dataset from real files.

    ``download=True`` (sources that can) first fetches missing or corrupt files into ``root``,
    with ``base_url`` / ``md5s`` overriding the official mirror. ``options`` are the source's own
    (``image_size`` for ``image_folder``).
    """
    source = get_source(name)
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}; expected 'train' or 'test'")
    if download and source.download is None:
        can = [n for n in dataset_names() if SOURCES[n].download is not None]
        raise DataError(f"{name}: download=True is not supported; downloads exist for: {', '.join(can)}")
    unknown = sorted(k for k, v in options.items() if k not in source.options)
    if unknown:
        hint = "; resize with prepare(ds, resolution)" if "image_size" in unknown else ""
        raise DataError(f"{name}: option(s) {', '.join(unknown)} do not apply to {name}"
                        f"{' (image_size applies only to image_folder)' if 'image_size' in unknown else ''}{hint}")
    if (base_url is not None or md5s is not None) and not download:
        raise DataError(f"{name}: base_url/md5s only apply with download=True")
    path = resolve_root(name, root, must_exist=not download)
    if download:
        source.download(path, base_url=base_url, md5s=md5s)
    return source.load(name, path, split, **options)


def dataset_configs() -> dict[str, DatasetConfig]:
    """The ``dataset`` config group: every registered source's config node."""
    _discover()
    return {name: SOURCES[name].config for name in sorted(SOURCES)}
