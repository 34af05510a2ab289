"""The base network ("B0") of stage 2: a reference name, an architecture string, or a file.

``base`` may be a published name (``efficientnet-b0``), an architecture string (official block
strings, optionally with ``key=value`` tokens), the ``best.json`` that ``nas-search`` writes, or
the results folder holding it. Files are read and checked up front, so that a bad base is a
one-line ``ValueError`` before anything is trained or written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search_space import ArchSpec, reference_names, reference_spec

__all__ = ["BaseSource", "read_base", "DEFAULT_BASE"]

DEFAULT_BASE = "efficientnet-b0"


def _reference_key(text: str) -> str | None:
    key = text.strip().lower().replace("_", "-")
    return key if key in reference_names() else None


def _looks_like_path(text: str) -> bool:
    if "/" in text or text.endswith((".json", ".yaml", ".yml")):
        return True  # never part of an architecture string
    if "=" in text or any(c.isspace() for c in text):
        return False  # key=value tokens, several block strings
    try:
        return Path(text).expanduser().exists()
    except OSError:  # e.g. a name too long for the file system
        return False


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ValueError(f"base file {path} not found") from None
    except IsADirectoryError:
        raise ValueError(f"base {path} is a folder without best.json") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read base file {path}: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"base file {path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None


@dataclass(frozen=True)
class BaseSource:
    """Where the base comes from; :meth:`spec` fixes its classifier head."""

    text: str
    kind: str  # "reference" | "arch" | "file"
    file_spec: ArchSpec | None = None
    file_resolution: int | None = None
    dataset: str | None = None

    @property
    def has_fixed_head(self) -> bool:
        """A file fixes its head; a reference name or a bare string takes the one asked for."""
        return self.kind == "file"

    def spec(self, num_classes: int | None = None, in_channels: int | None = None, *,
             what: str = "num_classes / in_channels") -> ArchSpec:
        """The base with ``num_classes`` / ``in_channels`` (``None``: the source's own or 1000 / 3).

        A file's head cannot change: asking for another one is a ``ValueError`` naming ``what``
        asked for it (e.g. the dataset)."""
        if self.kind == "reference":
            return reference_spec(self.text, num_classes=num_classes or 1000, in_channels=in_channels or 3)
        if self.kind == "arch":
            defaults = {k: v for k, v in (("num_classes", num_classes), ("in_channels", in_channels))
                        if v is not None}
            spec = ArchSpec.from_string(self.text, **defaults)
        else:
            assert self.file_spec is not None
            spec = self.file_spec
        wanted = (num_classes or spec.num_classes, in_channels or spec.in_channels)
        if (spec.num_classes, spec.in_channels) != wanted:
            where = f"base {self.text}" if self.kind == "file" else "the base architecture string"
            raise ValueError(f"{where} has {spec.num_classes} classes / {spec.in_channels} input channels "
                             f"but {what} asks for {wanted[0]} / {wanted[1]}")
        return spec

    def describe(self) -> str:
        return self.text if self.kind != "arch" else "architecture string"


def _from_record(record: Any, path: Path) -> tuple[ArchSpec, int | None, str | None]:
    where = f"base file {path}"
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object like nas-search's best.json, got "
                         f"{type(record).__name__}")
    arch, spec_dict = record.get("arch"), record.get("spec")
    if arch is None and spec_dict is None:
        raise ValueError(f"{where}: no 'arch' (architecture string) or 'spec' entry")
    try:
        spec = ArchSpec.from_string(arch) if arch is not None else ArchSpec.from_dict(spec_dict)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where}: bad {'arch' if arch is not None else 'spec'}: {exc}") from None
    if arch is not None and spec_dict is not None:
        try:
            other = ArchSpec.from_dict(spec_dict)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where}: bad spec: {exc}") from None
        if other != spec:
            raise ValueError(f"{where}: 'arch' and 'spec' describe different networks")
    for key, value in (("num_classes", spec.num_classes), ("in_channels", spec.in_channels)):
        if key in record and record[key] != value:
            raise ValueError(f"{where}: {key}={record[key]!r} but its architecture has {value}")
    resolution = record.get("resolution")
    if resolution is not None and (isinstance(resolution, bool) or not isinstance(resolution, int)
                                   or resolution < 32):
        raise ValueError(f"{where}: resolution must be an integer >= 32, got {resolution!r}")
    dataset = record.get("dataset")
    return spec, resolution, dataset if isinstance(dataset, str) else None


def read_base(text: Any) -> BaseSource:
    """Classify and (for files) read and check ``base``. Raises one-line ``ValueError``s."""
    if text is None:
        text = DEFAULT_BASE
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"base must be a reference name ({', '.join(reference_names())}), an "
                         f"architecture string or a best.json path, got {text!r}")
    text = text.strip()
    key = _reference_key(text)
    if key is not None:
        return BaseSource(key, "reference")
    if _looks_like_path(text):
        path = Path(text).expanduser()
        if path.is_dir():
            path = path / "best.json"
        spec, resolution, dataset = _from_record(_read_json(path), path)
        return BaseSource(str(path), "file", spec, resolution, dataset)
    try:
        ArchSpec.from_string(text)
    except ValueError as exc:
        raise ValueError(f"base {text!r} is not a reference name ({', '.join(reference_names())}), "
                         f"a best.json path or a valid architecture string: {exc}") from None
    return BaseSource(text, "arch")
