"""Architecture <-> one-line string, built on the official TensorFlow block strings.

Block tokens follow ``efficientnet_builder.py``: ``r<repeats>_k<kernel>_s<stride><stride>_
e<expand>_i<in>_o<out>[_se<ratio>][_noskip]``. effnas adds ``c1`` for a regular (dense) conv
layer; an ``e1`` block without ``c1`` is the depthwise-separable conv, as in the official code.
What block strings do not carry is written as ``key=value`` tokens::

    stem=32 r1_k3_s11_e1_i32_o16_se0.25 ... r1_k3_s11_e6_i192_o320_se0.25 head=1280 classes=1000
    channels=3 res=224 dropout=0.2 drop_connect=0.2 act=silu

Tokens are separated by whitespace; ``key=value`` tokens may appear anywhere and in any order,
block tokens in network order. Missing ``key=value`` fields take defaults, so a bare list of
official block strings parses too.

This module is the grammar only: it turns strings into plain dicts of field values and formats
objects that have the fields (duck-typed), and imports nothing from the package.
:mod:`.spec` builds the validated specs from the dicts (``ArchSpec.from_string``).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["encode_block", "parse_block", "encode_arch", "parse_arch", "to_timm_arch_def", "bad_block"]

# key in the string -> ArchSpec field and parser
_FIELDS: dict[str, tuple[str, type]] = {
    "stem": ("stem", int),
    "head": ("head", int),
    "classes": ("num_classes", int),
    "channels": ("in_channels", int),
    "res": ("resolution", int),
    "dropout": ("dropout", float),
    "drop_connect": ("drop_connect", float),
    "act": ("activation", str),
}
_ORDER_BEFORE = ("stem",)
_ORDER_AFTER = ("head", "classes", "channels", "res", "dropout", "drop_connect", "act")

_INT = r"[0-9]+"
_NUM = r"[0-9]+(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?"
_OPTION = re.compile(r"^(r|k|s|e|i|o|se|c)(.+)$")


def _fmt(x: int | float) -> str:
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return repr(x) if isinstance(x, float) else str(x)


def encode_block(block: Any) -> str:
    """Official block string of one stage (``c1`` added for a regular conv)."""
    parts = [f"r{block.repeats}", f"k{block.kernel}", f"s{block.stride}{block.stride}",
             f"e{_fmt(block.expand_ratio)}", f"i{block.in_filters}", f"o{block.out_filters}"]
    if block.se_ratio > 0:
        parts.append(f"se{_fmt(block.se_ratio)}")
    if block.conv_type == "conv":
        parts.append("c1")
    if not block.id_skip:
        parts.append("noskip")
    return "_".join(parts)


def bad_block(token: str, why: str) -> ValueError:
    return ValueError(f"bad block string {token!r}: {why}")


def _parse_int(token: str, key: str, text: str) -> int:
    if not re.fullmatch(_INT, text):
        raise bad_block(token, f"'{key}' needs a non-negative integer, got {text!r}")
    return int(text)


def _parse_num(token: str, key: str, text: str) -> int | float:
    if not re.fullmatch(_NUM, text):
        raise bad_block(token, f"'{key}' needs a number, got {text!r}")
    value = float(text)
    return int(value) if "." not in text and "e" not in text else value


def parse_block(token: str) -> dict[str, Any]:
    """Parse one official block string into BlockSpec fields. Raises ValueError naming the token and
    the bad part (field values are validated by BlockSpec)."""
    if not isinstance(token, str) or not token:
        raise bad_block(str(token), "empty")
    values: dict[str, Any] = {}
    id_skip = True
    for op in token.split("_"):
        if op == "noskip":
            if not id_skip:
                raise bad_block(token, "'noskip' given twice")
            id_skip = False
            continue
        m = _OPTION.match(op)
        if m is None:
            raise bad_block(token, f"unknown option {op!r} (expected r, k, s, e, i, o, se, c or noskip)")
        key, text = m.groups()
        if key == "s" and text.startswith("e"):  # 'se0.25' matched as 's' + 'e0.25'
            key, text = "se", text[1:]
        if key in values:
            raise bad_block(token, f"option '{key}' given twice")
        if key in ("r", "k", "i", "o"):
            values[key] = _parse_int(token, key, text)
        elif key == "s":
            if not re.fullmatch(r"[0-9]{1,2}", text):
                raise bad_block(token, f"'s' needs one or two stride digits like s11 or s22, got {text!r}")
            if len(text) == 2 and text[0] != text[1]:
                raise bad_block(token, f"only square strides are supported (s11 or s22), got s{text}")
            values[key] = int(text[0])
        elif key in ("e", "se"):
            values[key] = _parse_num(token, key, text)
        elif key == "c":
            if text not in ("0", "1"):
                raise bad_block(token, f"'c' must be c0 (depthwise) or c1 (regular conv), got c{text}")
            values[key] = int(text)
    missing = [k for k in ("r", "k", "s", "e", "i", "o") if k not in values]
    if missing:
        raise bad_block(token, f"missing option(s) {', '.join(missing)}")
    if values.get("c", 0) == 1:
        conv_type = "conv"
    elif values["e"] == 1:
        conv_type = "ds"
    else:
        conv_type = "mbconv"
    return {"repeats": values["r"], "kernel": values["k"], "stride": values["s"], "expand_ratio": values["e"],
            "in_filters": values["i"], "out_filters": values["o"], "se_ratio": float(values.get("se", 0.0)),
            "id_skip": id_skip, "conv_type": conv_type}


def encode_arch(spec: Any) -> str:
    values = {
        "stem": spec.stem, "head": spec.head, "classes": spec.num_classes,
        "channels": spec.in_channels, "res": spec.resolution, "dropout": _fmt(spec.dropout),
        "drop_connect": _fmt(spec.drop_connect), "act": getattr(spec.activation, "value", spec.activation),
    }
    before = [f"{k}={values[k]}" for k in _ORDER_BEFORE]
    after = [f"{k}={values[k]}" for k in _ORDER_AFTER]
    return " ".join(before + [encode_block(s) for s in spec.stages] + after)


def parse_arch(text: str, activations: tuple[str, ...]) -> tuple[dict[str, Any], list[str]]:
    """Split :func:`encode_arch` output or bare block strings into ``(ArchSpec fields, block tokens)``."""
    if not isinstance(text, str):
        raise ValueError(f"an architecture string must be a str, got {type(text).__name__}")
    tokens = text.replace(",", " ").split()
    if not tokens:
        raise ValueError("empty architecture string: expected block strings like "
                         "'r1_k3_s11_e1_i32_o16_se0.25'")
    fields: dict[str, Any] = {}
    stages: list[str] = []
    for token in tokens:
        if "=" in token:
            key, _, raw = token.partition("=")
            if key not in _FIELDS:
                raise ValueError(f"bad token {token!r}: unknown key {key!r} (valid: "
                                 f"{', '.join(_FIELDS)})")
            name, kind = _FIELDS[key]
            if name in fields:
                raise ValueError(f"bad token {token!r}: {key!r} given twice")
            if kind is int:
                if not re.fullmatch(_INT, raw):
                    raise ValueError(f"bad token {token!r}: {key} needs an integer, got {raw!r}")
                fields[name] = int(raw)
            elif kind is float:
                if not re.fullmatch(_NUM, raw):
                    raise ValueError(f"bad token {token!r}: {key} needs a number, got {raw!r}")
                fields[name] = float(raw)
            else:
                if raw not in activations:
                    raise ValueError(f"bad token {token!r}: act must be one of "
                                     f"{', '.join(activations)}")
                fields[name] = raw
        else:
            stages.append(token)
    if not stages:
        raise ValueError(f"architecture string {text!r} has no block strings")
    return fields, stages


def to_timm_arch_def(spec: Any) -> list[list[str]]:
    """timm's ``arch_def``: one list of block strings per stage (``ds_``, ``ir_``, ``cn_``).

    timm writes the output width as ``c<out>`` and a single stride digit; the stem, head and
    width/depth multipliers are constructor arguments there, not part of the strings.
    """
    out = []
    for s in spec.stages:
        prefix = {"ds": "ds", "mbconv": "ir", "conv": "cn"}[str(getattr(s.conv_type, "value", s.conv_type))]
        parts = [prefix, f"r{s.repeats}", f"k{s.kernel}", f"s{s.stride}"]
        if s.conv_type != "conv":
            parts.append(f"e{_fmt(s.expand_ratio)}")
        parts.append(f"c{s.out_filters}")
        if s.se_ratio > 0:
            parts.append(f"se{_fmt(s.se_ratio)}")
        if not s.id_skip:
            parts.append("noskip")
        out.append(["_".join(parts)])
    return out
