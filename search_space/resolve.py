"""One resolver for every place a user names an architecture: ``nas-train arch=``, ``scale-search
base=``, ``scale-family base=``, the search space's ``space.base`` and warm starts.

Accepted, in this order:

* a reference name in either spelling (``efficientnet-b0``, ``efficientnet_b0``, ``MnasNet-A1``);
* an architecture string (official block strings, optionally with ``key=value`` tokens, as
  ``best.json`` prints them -- strings are never looked up on disk, so a 300-character string
  cannot fail as a file name);
* a ``best.json`` (or any JSON with ``arch`` / ``spec``), or the results folder holding it.

Files are read and checked up front: a bad one is a one-line ``ValueError`` before anything is
trained or written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .references import reference_names, reference_spec
from .spec import ArchSpec

__all__ = ["ResolvedArch", "resolve_arch", "reference_key", "DEFAULT_ARCH"]

DEFAULT_ARCH = "efficientnet-b0"


def reference_key(text: str) -> str | None:
    """The canonical reference name of ``text`` (``EfficientNet_B0`` -> ``efficientnet-b0``), or None."""
    key = text.strip().lower().replace("_", "-")
    return key if key in reference_names() else None


def _is_arch_string(text: str) -> bool:
    """Block strings and ``key=value`` tokens never name a file: ``r1_k3_s11...`` has no dot and
    no slash, ``res=224`` has '=', several tokens have spaces."""
    if "=" in text or any(c.isspace() for c in text):
        return True
    return text.startswith("r") and "_k" in text and "/" not in text and not text.endswith((".json", ".yaml"))


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ValueError(f"architecture file {path} not found") from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a folder without best.json") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read architecture file {path}: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"architecture file {path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None


def _from_record(record: Any, path: Path) -> tuple[ArchSpec, int | None, str | None]:
    where = f"architecture file {path}"
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object like nas-search's best.json, got "
                         f"{type(record).__name__}")
    arch, spec_dict = record.get("arch"), record.get("spec")
    if arch is None and spec_dict is None:
        raise ValueError(f"{where}: no 'arch' (architecture string) or 'spec' entry (expected a best.json "
                         f"from nas-search)")
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


@dataclass(frozen=True)
class ResolvedArch:
    """What a name, string or file resolved to. :meth:`spec_for` fixes the classifier head."""

    text: str                   # the reference name, the string, or the file's path
    kind: str                   # "reference" | "string" | "file"
    record: dict[str, Any] | None = None   # the file's JSON (best.json)
    file_spec: ArchSpec | None = None
    resolution: int | None = None          # best.json's resolution (the search's), if any
    dataset: str | None = None

    def describe(self) -> str:
        return self.text if self.kind != "string" else "architecture string"

    @property
    def head_fixed(self) -> tuple[int | None, int | None]:
        """(classes, channels) the source itself fixes: a file's, a string's explicit tokens."""
        if self.kind == "file":
            assert self.file_spec is not None
            return self.file_spec.num_classes, self.file_spec.in_channels
        if self.kind == "string":
            tokens = self.text.replace(",", " ").split()
            fixed = {t.partition("=")[0]: int(t.partition("=")[2]) for t in tokens
                     if t.startswith(("classes=", "channels=")) and t.partition("=")[2].isdigit()}
            return fixed.get("classes"), fixed.get("channels")
        return None, None

    def spec(self, num_classes: int | None = None, in_channels: int | None = None) -> ArchSpec:
        """The spec with ``num_classes`` / ``in_channels`` where the source leaves them open
        (default 1000 / 3); where it fixes them, they are kept (see :meth:`spec_for`)."""
        if self.kind == "reference":
            return reference_spec(self.text, num_classes=num_classes or 1000, in_channels=in_channels or 3)
        if self.kind == "string":
            defaults = {k: v for k, v in (("num_classes", num_classes), ("in_channels", in_channels))
                        if v is not None}
            return ArchSpec.from_string(self.text, **defaults)
        assert self.file_spec is not None
        return self.file_spec

    def spec_for(self, num_classes: int, in_channels: int, *, what: str, adapt: bool = False,
                 note: Any = None) -> ArchSpec:
        """The spec for a task with ``num_classes`` / ``in_channels`` (``what``: who asks, e.g.
        "dataset fashion_mnist"). A source that fixes another head is an error -- or, with
        ``adapt``, gets the task's head and ``note(message)`` is called with one line saying so."""
        spec = self.spec(num_classes, in_channels)
        if (spec.num_classes, spec.in_channels) == (num_classes, in_channels):
            return spec
        where = f"{self.describe()}"
        message = (f"{where} has {spec.num_classes} classes / {spec.in_channels} input channels but {what} "
                   f"has {num_classes} / {in_channels}")
        if not adapt:
            raise ValueError(message)
        if note is not None:
            note(f"{message}: using {num_classes} classes / {in_channels} channels (same body, new stem and head)")
        return spec.replace(num_classes=num_classes, in_channels=in_channels)


def resolve_arch(text: Any, *, what: str = "arch") -> ResolvedArch:
    """Classify ``text`` and (for files) read and check it. ``what`` names the config key in
    messages. Raises one-line ``ValueError``\\ s."""
    if text is None:
        text = DEFAULT_ARCH
    if isinstance(text, ArchSpec):
        return ResolvedArch(text.to_string(), "string")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{what} must be a reference name ({', '.join(reference_names())}), an "
                         f"architecture string or a best.json path, got {text!r}")
    text = text.strip()
    key = reference_key(text)
    if key is not None:
        return ResolvedArch(key, "reference")
    if _is_arch_string(text):
        try:
            ArchSpec.from_string(text)
        except ValueError as exc:
            raise ValueError(f"{exc}; {what}={text!r} is not a reference name ({', '.join(reference_names())}), "
                             f"a best.json path or a valid architecture string") from None
        return ResolvedArch(text, "string")
    path = Path(text).expanduser()
    try:
        exists = path.exists()
    except OSError:  # e.g. a name too long for the file system
        exists = False
    if not exists and not text.endswith(".json") and "/" not in text:
        raise ValueError(f"{what}={text!r} is not a reference name ({', '.join(reference_names())}), "
                         f"an architecture string or an existing best.json / results folder")
    if path.is_dir():
        if not (path / "best.json").exists():
            raise ValueError(f"{what}={text}: the folder has no best.json (expected a nas-search results folder, "
                             f"a best.json path, a reference name or an architecture string)")
        path = path / "best.json"
    try:
        record = _read_json(path)
        spec, resolution, dataset = _from_record(record, path)
    except ValueError as exc:
        raise ValueError(f"{what}={text}: {exc}") from None
    return ResolvedArch(str(path), "file", record, spec, resolution, dataset)
