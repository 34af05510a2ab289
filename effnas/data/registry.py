"""The dataset registry: one :class:`Source` per dataset, registered by its module in
:mod:`effnas.data.sources` (adding a dataset is adding one module there).

A source knows how to load one split from a root folder, where the data lives by default, how to
download it (if it can) and its config node -- the ``dataset`` group option of every command.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

from omegaconf import MISSING

from ..schema import Schema
from .core import DataError, ImageDataset, MissingData, Split, Survey, check_memory, one_line

__all__ = ["DatasetConfig", "Located", "Source", "SOURCES", "register", "dataset_names", "get_source", "load_dataset",
           "locate", "resolve_root", "dataset_configs"]


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
    debian_package: str | None = None             # the Debian package that puts the files at default_root
    splits: Callable[[Path], tuple[str, ...]] | None = None  # the splits a root holds; None: train and test
    # survey(name, root, split, resolution=, **options) -> Survey: what load() would decode, found
    # without decoding. A source with a survey also takes load(..., indices=, resolution=): decode only
    # those images (in that order), straight at resolution x resolution unless its options fix a size.
    survey: Callable[..., Survey] | None = None

    def __post_init__(self) -> None:
        if self.debian_package is not None and self.default_root is None:
            raise ValueError(f"dataset {self.name!r}: debian_package needs the default_root it installs to")

    def fixes(self, default_root: bool) -> str:
        """The ways to get the files, for a missing-data error (``default_root``: the root was not given)."""
        ways = []
        if self.debian_package is not None and default_root:
            ways.append(f"apt-get install {self.debian_package} (puts the files in {self.default_root})")
        ways.append("dataset.root=<folder> holding the files (root= in Python)")
        if self.download is not None:
            ways.append("dataset.download=true to fetch them (download=True)")
        return "fix: " + (", ".join(ways[:-1]) + " or " + ways[-1] if len(ways) > 1 else ways[0])


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
                f"(dataset.root=<folder> on the command line; defaults exist for: {', '.join(defaults)})"
            )
        root = source.default_root
    path = Path(root).expanduser()
    if must_exist and not path.is_dir():
        raise MissingData(f"{name}: root {path} is not an existing directory; expected the dataset's directory")
    return path


@dataclass(frozen=True)
class Located:
    """A checked dataset request: its source, root folder (downloaded into when asked) and options."""

    source: Source
    root: Path
    options: dict[str, Any]
    default_root: bool  # the root is the source's default (not given)

    def available_splits(self) -> tuple[str, ...]:
        return self.source.splits(self.root) if self.source.splits is not None else ("train", "test")

    def survey(self, split: Split, resolution: int | None = None) -> Survey:
        if self.source.survey is None:
            raise DataError(f"{self.source.name}: cannot be surveyed without decoding")
        with self._fixes():
            return self.source.survey(self.source.name, self.root, split, resolution=resolution, **self.options)

    def load(self, split: Split, **extra: Any) -> ImageDataset:
        with self._fixes():
            return self.source.load(self.source.name, self.root, split, **self.options, **extra)

    @contextlib.contextmanager
    def _fixes(self) -> Iterator[None]:
        try:
            yield
        except MissingData as exc:
            raise MissingData(f"{one_line(exc)}; {self.source.fixes(self.default_root)}") from exc


def locate(
    name: str,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    *,
    base_url: str | None = None,
    md5s: Mapping[str, str] | None = None,
    **options: Any,
) -> Located:
    """Check a dataset request (name, download, options) and find its root, downloading into it
    first when asked. Every problem is a one-line :class:`DataError`; missing files name the fixes."""
    source = get_source(name)
    if download and source.download is None:
        can = [n for n in dataset_names() if SOURCES[n].download is not None]
        raise DataError(f"{name}: download=True is not supported; downloads exist for: {', '.join(can)}")
    unknown = sorted(k for k in options if k not in source.options)
    if unknown:
        if "image_size" in unknown:
            hint = " (image_size applies only to image_folder); resize with prepare(ds, resolution)"
        else:
            hint = f"; its options: {', '.join(source.options) or 'none'}"
        raise DataError(f"{name}: option(s) {', '.join(unknown)} do not apply to {name}{hint}")
    if (base_url is not None or md5s is not None) and not download:
        raise DataError(f"{name}: base_url/md5s only apply with download=True")
    try:
        path = resolve_root(name, root, must_exist=not download)
    except MissingData as exc:
        raise MissingData(f"{one_line(exc)}; {source.fixes(root is None)}") from exc
    if download:
        assert source.download is not None
        source.download(path, base_url=base_url, md5s=md5s)
    return Located(source, path, dict(options), root is None)


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
    (``image_size`` for ``image_folder``); any other keyword is a :class:`DataError`.
    """
    get_source(name)
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}; expected 'train' or 'test'")
    located = locate(name, root, download, base_url=base_url, md5s=md5s, **options)
    if located.source.survey is not None:  # decoded files: refuse up front what cannot fit in memory
        survey = located.survey(split)
        height, width = survey.size
        check_memory(survey.resident_bytes() + survey.peak_bytes,
                     f"{name}: decoding {survey.count:,} {split} images at {survey.channels}x{height}x{width}",
                     "pass a smaller image_size (dataset.image_size) or use a smaller folder")
    return located.load(split)


def dataset_configs() -> dict[str, DatasetConfig]:
    """The ``dataset`` config group: every registered source's config node."""
    _discover()
    return {name: SOURCES[name].config for name in sorted(SOURCES)}
