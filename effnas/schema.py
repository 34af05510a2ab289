"""Config schemas: typed dataclasses whose value rules sit next to their fields, once.

Every config node of every command (the ``proxy``, ``sampler``, ``storage``... groups and the
roots) is a :class:`Schema` dataclass. Hydra composes them from the ConfigStore (wrong types,
unknown keys and typos fail there, naming the key); building the node (``OmegaConf.to_object`` or a
plain constructor call from Python) runs :meth:`Schema.__post_init__`, which checks every field's
type and :func:`rule`, then the node's own cross-field :meth:`Schema.validate`. A failed check is
a :class:`ConfigError` whose message names the full key (``proxy.epochs must be an integer >= 1,
got 0``), ready to be printed as one line.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Union

__all__ = ["ConfigError", "Schema", "rule", "describe_type"]


class ConfigError(ValueError):
    """A bad config value; ``key`` is the full dotted key, the message one line naming it."""

    def __init__(self, key: str, message: str | None = None) -> None:
        if message is None:  # OmegaConf re-raises exceptions as type(exc)(message)
            key, message = "", key
        self.key = key
        super().__init__(message)


@dataclass(frozen=True)
class _Rule:
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: Iterable[Any] | Callable[[], Iterable[Any]] | None = None
    finite: bool = True

    def valid_choices(self) -> tuple[Any, ...] | None:
        if self.choices is None:
            return None
        return tuple(self.choices() if callable(self.choices) else self.choices)


def rule(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
         ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
         choices: Iterable[Any] | Callable[[], Iterable[Any]] | None = None, finite: bool = True) -> Any:
    """A dataclass field with a value rule: bounds for numbers (``ge``/``gt``/``le``/``lt``, also
    applied to every item of a list), or ``choices`` (a collection, or a callable such as a
    registry's ``names`` so that the list is derived from the registry)."""
    meta = {"rule": _Rule(ge, gt, le, lt, choices, finite)}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


_ARTICLE = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def describe_type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        inner = " or ".join(describe_type(a) for a in args)
        return f"{inner} or null" if len(args) < len(typing.get_args(annotation)) else inner
    if origin in (list, tuple, typing.List, typing.Tuple):
        args = typing.get_args(annotation)
        return f"a list of {describe_type(args[0]).replace('an ', '').replace('a ', '')}s" if args else "a list"
    return _ARTICLE.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _matches(value: Any, annotation: Any) -> bool:
    if annotation is Any or annotation is object:
        return True
    origin = typing.get_origin(annotation)
    if origin is Union:
        return any(_matches(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin in (list, tuple, typing.List, typing.Tuple):
        if not isinstance(value, (list, tuple)):
            return False
        args = typing.get_args(annotation)
        return not args or all(_matches(v, args[0]) for v in value)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _bound_text(r: _Rule) -> str:
    parts = []
    for op, v in ((">=", r.ge), (">", r.gt), ("<=", r.le), ("<", r.lt)):
        if v is not None:
            parts.append(f"{op} {v:g}")
    return " and ".join(parts)


def _check_number(key: str, value: float, r: _Rule, what: str) -> None:
    if isinstance(value, float) and r.finite and not math.isfinite(value):
        raise ConfigError(key, f"{key} must be a finite number, got {value!r}")
    ok = ((r.ge is None or value >= r.ge) and (r.gt is None or value > r.gt)
          and (r.le is None or value <= r.le) and (r.lt is None or value < r.lt))
    if not ok:
        raise ConfigError(key, f"{key} must be {what} {_bound_text(r)}, got {value!r}")


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    """A node class's resolved annotations, once per class: resolving them took ~1 ms a node, and
    the evaluator makes a training config (a node) for every trial."""
    return typing.get_type_hints(cls)


class Schema:
    """Base of every config node. ``_key`` is where the node is mounted (``proxy``, ``search``,
    ``""`` for a root); messages name ``<_key>.<field>``."""

    _key: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if any(isinstance(getattr(self, f.name), str) and "${" in getattr(self, f.name)
               for f in dataclasses.fields(self)):  # type: ignore[arg-type]
            return  # a template with interpolations (OmegaConf reads defaults): checked once resolved
        hints = _hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.name.startswith("_"):
                continue
            value = getattr(self, f.name)
            key = self.key_of(f.name)
            annotation = hints.get(f.name, Any)
            if not _matches(value, annotation):
                raise ConfigError(key, f"{key} must be {describe_type(annotation)}, got {value!r}")
            r = f.metadata.get("rule")
            if r is None or value is None:
                continue
            choices = r.valid_choices()
            items = value if isinstance(value, (list, tuple)) else [value]
            for item in items:
                if choices is not None and item not in choices:
                    raise ConfigError(key, f"{key} must be one of {', '.join(map(str, choices))}, got {item!r}")
                if choices is None and isinstance(item, (int, float)) and not isinstance(item, bool):
                    _check_number(key, item, r, "an integer" if isinstance(item, int) and
                                  "int" in str(annotation) else "a number")
        try:
            self.validate()
        except ConfigError:
            raise
        except ValueError as exc:  # a rule checked by a lower layer (a spec, the grid): keep its words
            raise ConfigError(self._key or type(self).__name__, str(exc)) from None

    def key_of(self, name: str) -> str:
        return f"{self._key}.{name}" if self._key else name

    def fail(self, name: str, message: str) -> ConfigError:
        """``ConfigError`` about field ``name``: ``message`` follows the full key."""
        key = self.key_of(name)
        return ConfigError(key, f"{key} {message}")

    def validate(self) -> None:
        """Cross-field rules of this node; raise ``self.fail(field, message)``."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]
