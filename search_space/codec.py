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
    """Official block string of one stage (``c1`` added for a regular conv, ``poolskip`` for
    MnasNet's pooling skip op, ``BlockSpec.pool_skip``; it replaces ``noskip``)."""
    parts = [f"r{block.repeats}", f"k{block.kernel}", f"s{block.stride}{block.stride}",
             f"e{_fmt(block.expand_ratio)}", f"i{block.in_filters}", f"o{block.out_filters}"]
    if block.se_ratio > 0:
        parts.append(f"se{_fmt(block.se_ratio)}")
    if block.conv_type == "conv":
        parts.append("c1")
    if getattr(block, "pool_skip", False):
        parts.append("poolskip")
    elif not block.id_skip:
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
    skip = None  # 'noskip' | 'poolskip'
    for op in token.split("_"):
        if op in ("noskip", "poolskip"):
            if skip is not None:
                raise bad_block(token, f"'{op}' given twice" if op == skip else
                                "'noskip' and 'poolskip' are two skip ops: give one")
            skip = op
            continue
        m = _OPTION.match(op)
        if m is None:
            raise bad_block(token, f"unknown option {op!r} (expected r, k, s, e, i, o, se, c, noskip or "
                                   f"poolskip)")
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
            "id_skip": skip != "noskip", "conv_type": conv_type, "pool_skip": skip == "poolskip"}


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


def _timm_make_divisible(v: float, divisor: int = 8) -> int:
    """The width timm's ``InvertedResidual`` gives its expanded tensor for ``in * e``
    (``timm.layers.make_divisible`` with its defaults: nearest multiple of 8, at least 8, and never
    more than 10% below ``v``). effnas uses ``int(in * e)``; the two agree only on some widths."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new < 0.9 * v:
        new += divisor
    return new


def _timm_stage_problem(stage: Any, kind: str) -> str | None:
    """Why timm's block for ``kind`` cannot build what effnas builds for ``stage`` (None if it can).

    Checked for every distinct layer input of the stage: the first layer's ``in_filters`` and, with
    repeats, ``out_filters`` (the repeats' input)."""
    if getattr(stage, "pool_skip", False) and (stage.stride != 1 or stage.in_filters != stage.out_filters):
        # only the first layer can change the shape; on shape-keeping layers 'pool' is the identity
        return (f"timm has no pooling skip op (the first layer maps {stage.in_filters} -> "
                f"{stage.out_filters} channels at stride {stage.stride})")
    se = float(stage.se_ratio)
    if kind == "cn":
        # timm's decoder passes no se_ratio to ConvBnAct: an 'se' option would be dropped silently
        return "timm's ConvBnAct has no squeeze-excite" if se > 0 else None
    inputs = sorted({stage.in_filters} | ({stage.out_filters} if stage.repeats > 1 else set()))
    e = float(stage.expand_ratio)  # what timm's decoder reads back from the e<ratio> option
    for cin in inputs:
        mid = cin
        if kind == "ir":
            mid, ours = _timm_make_divisible(cin * e), int(cin * stage.expand_ratio)
            if mid != ours:
                return (f"timm's InvertedResidual widens {cin} channels to make_divisible({cin} * {_fmt(e)}) = "
                        f"{mid}, effnas to int({cin} * {_fmt(e)}) = {ours}")
        if se > 0:
            # timm (EfficientNetBuilder, se_from_exp=False): rd_ratio = se / exp_ratio applied to
            # the expanded width, rounded with round(); effnas: max(1, int(in * se)) (official rule)
            theirs, ours = round(mid * (se / (e if kind == "ir" else 1.0))), max(1, int(cin * se))
            if theirs != ours:
                return (f"timm's squeeze-excite for a {cin}-channel input has {theirs} channels, "
                        f"effnas's max(1, int({cin} * {_fmt(se)})) = {ours}")
    return None


def to_timm_arch_def(spec: Any) -> list[list[str]]:
    """timm's ``arch_def``: one list of block strings per stage (``ds_``, ``ir_``, ``cn_``).

    timm writes the output width as ``c<out>`` and a single stride digit. A regular-conv stage is
    ``cn_..._skip`` when its ``id_skip`` is set: timm's ConvBnAct adds the residual only when the
    string says ``skip`` (and then, like effnas, only where stride is 1 and in == out, repeats
    included); ``ds``/``ir`` have it by default and are ``noskip`` otherwise.

    The stem, head, activation, normalisation and multipliers are constructor arguments there, not
    part of the strings. ``timm.models.efficientnet.EfficientNet`` builds exactly the network of
    :func:`search_space.build_model` (same parameters, same outputs with copied weights) from::

        EfficientNet(decode_arch_def(spec.to_timm_arch_def()), num_classes=spec.num_classes,
                     num_features=spec.head, in_chans=spec.in_channels, stem_size=spec.stem,
                     fix_stem=True, round_chs_fn=lambda c: c, act_layer=<nn.SiLU | nn.ReLU | nn.ReLU6>,
                     norm_layer=partial(nn.BatchNorm2d, eps=1e-3), output_stride=<total stride, if > 32>)

    ``round_chs_fn``/``fix_stem`` keep widths that are not multiples of 8 as they are (timm's
    default rounds them), ``eps=1e-3`` is effnas's BN default (timm's is 1e-5; parameter counts
    do not depend on it), and timm turns strides beyond ``output_stride`` (default 32) into
    dilation.

    A ``pool_skip`` stage whose layers all keep the shape is the identity residual and is written
    as such.

    Raises ``ValueError`` naming the stage (1-based) for what timm's blocks cannot express: the
    pooling skip op on a layer that changes the shape, squeeze-excite on a regular conv, an
    expanded width ``int(in * e)`` that timm's ``make_divisible`` (multiples of 8) would change,
    or an SE width ``max(1, int(in * se))`` that timm's ``round(expanded * se / e)`` would change. With the default skips (identity, none) the
    default search space's only such case is a regular-conv stage with SE.
    """
    out = []
    for i, s in enumerate(spec.stages, start=1):
        kind = {"ds": "ds", "mbconv": "ir", "conv": "cn"}[str(getattr(s.conv_type, "value", s.conv_type))]
        problem = _timm_stage_problem(s, kind)
        if problem is not None:
            what = f"e {_fmt(s.expand_ratio)}, " if kind == "ir" else ""
            raise ValueError(f"stage {i} ({kind}, {what}se {_fmt(float(s.se_ratio))}): {problem}")
        parts = [kind, f"r{s.repeats}", f"k{s.kernel}", f"s{s.stride}"]
        if kind != "cn":
            parts.append(f"e{_fmt(s.expand_ratio)}")
        parts.append(f"c{s.out_filters}")
        if s.se_ratio > 0:
            parts.append(f"se{_fmt(s.se_ratio)}")
        if kind == "cn":
            if s.id_skip:
                parts.append("skip")
        elif not s.id_skip:
            parts.append("noskip")
        out.append(["_".join(parts)])
    return out
