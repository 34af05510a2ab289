"""What an architecture is: frozen, validated dataclasses.

A network is a stem convolution, an ordered tuple of *stages* (each stage is ``repeats`` identical
layers; only the first one has the stage's stride and input width, exactly as in the official
TensorFlow block strings), a 1x1 head convolution, global pooling, dropout and a linear classifier.

Nothing here imports torch: specs are plain data that can be priced, scaled, serialised and
compared without building a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from enum import Enum
from typing import Any

from . import codec

__all__ = ["ConvType", "Activation", "BlockSpec", "ArchSpec", "decode_block", "decode_arch", "encode_block",
           "encode_arch", "to_timm_arch_def"]


class ConvType(str, Enum):
    """The layer types of the MnasNet search space.

    ``MBCONV`` is the inverted bottleneck (1x1 expand, kxk depthwise, optional SE, 1x1 linear
    project). ``DS`` is the depthwise-separable conv: kxk depthwise, optional SE, 1x1 linear
    project -- exactly what the official code builds for an MBConv with expansion 1, so ``DS``
    always has ``expand_ratio == 1`` and ``MBCONV`` always has ``expand_ratio > 1``; a spec
    therefore has one spelling only. ``CONV`` is a regular (dense) kxk convolution from the
    stage's input to its output width, followed by BN, activation and optional SE.
    """

    MBCONV = "mbconv"
    DS = "ds"
    CONV = "conv"


class Activation(str, Enum):
    SILU = "silu"  # EfficientNet ("swish")
    RELU = "relu"  # MnasNet
    RELU6 = "relu6"  # MobileNetV2


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}")


def _check_real(name: str, value: Any, low: float, high: float, *, high_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number in [{low}, {high}], got {value!r}")
    if value < low or value > high or (high_open and value == high):
        bracket = ")" if high_open else "]"
        raise ValueError(f"{name} must be in [{low}, {high}{bracket}, got {value!r}")


def _normalise_number(value: Any) -> Any:
    """6.0 -> 6 so that a spec has exactly one string form."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@dataclass(frozen=True)
class BlockSpec:
    """One stage: ``repeats`` identical layers (official block-string semantics).

    The first layer maps ``in_filters`` -> ``out_filters`` with ``stride``; the following
    ``repeats - 1`` layers use stride 1 and ``in == out``. ``se_ratio`` is relative to the
    layer's *input* width (the official rule: ``max(1, int(in * se_ratio))`` squeeze channels,
    applied to the expanded tensor); 0 disables squeeze-excite.

    The skip op (MnasNet's {identity residual, pooling, no skip}), as :attr:`skip` names it:

    * ``id_skip`` (``"identity"``) adds the identity residual, used only where a layer keeps the
      shape (stride 1 and in == out): the official rule.
    * ``pool_skip`` (``"pool"``, block string ``poolskip``; needs ``id_skip``) gives *every* layer
      a shortcut: the identity where the layer keeps the shape, and where it does not, the input
      average-pooled to the layer's output size -- a 3x3 window, stride 2, padding 1 not counted,
      centred on the same pixels as the layer's strided kxk conv, so the output is ceil(H / 2) like
      the layer's (no pooling at stride 1) -- with its channels matched to the output's without
      weights: the first ``min(in, out)`` channels are added, output channels beyond ``in`` get
      nothing (zero padding, as PyramidNet's shortcut), input channels beyond ``out`` are dropped.
      It has no parameters and no multiply-adds. MnasNet's paper names the op without defining it;
      on a shape-keeping layer it *is* the identity residual, so ``pool`` and ``identity`` differ
      only on a stage's first layer when that layer strides or changes the width.
    * neither (``"none"``, block string ``noskip``): no shortcut.
    """

    repeats: int
    kernel: int
    stride: int
    expand_ratio: int | float
    in_filters: int
    out_filters: int
    se_ratio: float = 0.0
    id_skip: bool = True
    conv_type: ConvType = ConvType.MBCONV
    pool_skip: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "expand_ratio", _normalise_number(self.expand_ratio))
        object.__setattr__(self, "se_ratio", float(self.se_ratio) if isinstance(self.se_ratio, int)
                           and not isinstance(self.se_ratio, bool) else self.se_ratio)
        try:
            object.__setattr__(self, "conv_type", ConvType(self.conv_type))
        except ValueError:
            valid = ", ".join(c.value for c in ConvType)
            raise ValueError(f"conv_type must be one of {valid}, got {self.conv_type!r}") from None
        _check_int("repeats", self.repeats, 1)
        _check_int("kernel", self.kernel, 1)
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd (symmetric k//2 padding), got {self.kernel}")
        if isinstance(self.stride, bool) or not isinstance(self.stride, int) or self.stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {self.stride!r}")
        _check_int("in_filters", self.in_filters, 1)
        _check_int("out_filters", self.out_filters, 1)
        _check_real("se_ratio", self.se_ratio, 0.0, 1.0)
        if not isinstance(self.id_skip, bool):
            raise ValueError(f"id_skip must be True or False, got {self.id_skip!r}")
        if not isinstance(self.pool_skip, bool):
            raise ValueError(f"pool_skip must be True or False, got {self.pool_skip!r}")
        if self.pool_skip and not self.id_skip:
            raise ValueError("pool_skip includes the identity residual of shape-keeping layers: it needs "
                             "id_skip=True (id_skip=False is 'no skip')")
        e = self.expand_ratio
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not math.isfinite(e) or e < 1:
            raise ValueError(f"expand_ratio must be a number >= 1, got {e!r}")
        if self.conv_type is ConvType.MBCONV and e == 1:
            raise ValueError("expand_ratio 1 with conv_type mbconv is the depthwise-separable conv: "
                             "use conv_type='ds'")
        if self.conv_type in (ConvType.DS, ConvType.CONV) and e != 1:
            raise ValueError(f"conv_type {self.conv_type.value} has no expansion: expand_ratio must "
                             f"be 1, got {e!r}")

    @property
    def has_se(self) -> bool:
        return self.se_ratio > 0

    def expanded(self, in_filters: int) -> int:
        """Width of the tensor the depthwise conv and SE see, for a layer with this input width."""
        if self.conv_type is ConvType.MBCONV:
            # int(round()) would differ for fractional ratios; the official code uses int(in * e).
            return int(in_filters * self.expand_ratio)
        if self.conv_type is ConvType.CONV:
            return self.out_filters
        return in_filters

    def squeezed(self, in_filters: int) -> int:
        """Number of SE squeeze channels for a layer with this input width (official rule)."""
        return max(1, int(in_filters * self.se_ratio))

    def layers(self) -> list[tuple[int, int, int]]:
        """``(in_filters, out_filters, stride)`` of every layer of the stage."""
        first = [(self.in_filters, self.out_filters, self.stride)]
        return first + [(self.out_filters, self.out_filters, 1)] * (self.repeats - 1)

    @property
    def skip(self) -> str:
        """The skip op: ``"identity"``, ``"pool"`` or ``"none"`` (the search space's names)."""
        return "pool" if self.pool_skip else "identity" if self.id_skip else "none"

    def has_residual(self, in_filters: int, stride: int) -> bool:
        """Whether a layer with this input width and stride gets the identity residual."""
        return self.id_skip and stride == 1 and in_filters == self.out_filters

    def shortcut(self, in_filters: int, stride: int) -> str | None:
        """The shortcut a layer with this input width and stride gets: ``"identity"`` (shape kept,
        ``id_skip``), ``"pool"`` (shape changed, ``pool_skip``) or None."""
        if self.has_residual(in_filters, stride):
            return "identity"
        if self.pool_skip and not (stride == 1 and in_filters == self.out_filters):
            return "pool"
        return None

    def layer_key(self, in_filters: int, stride: int) -> tuple:
        """What one layer of this stage computes, as a hashable value: equal keys build the same
        layer (same modules, shapes and shortcut). Choices that leave a layer unchanged are not in
        it: the skip op where it adds no shortcut or where ``pool`` is the identity, and the
        expansion ratio beyond the expanded width ``int(in * e)`` it gives."""
        squeezed = self.squeezed(in_filters) if self.has_se else 0
        return (self.conv_type.value, self.kernel, stride, in_filters, self.out_filters,
                self.expanded(in_filters), squeezed, self.shortcut(in_filters, stride))


@dataclass(frozen=True)
class ArchSpec:
    """A whole network. ``resolution`` is the input size the spec is meant for (its default);
    the model itself accepts any resolution >= 32. ``dropout`` is applied before the classifier;
    ``drop_connect`` is the stochastic-depth rate of the last block (it grows linearly with the
    block index, as in the official code)."""

    stages: tuple[BlockSpec, ...]
    stem: int = 32
    head: int = 1280
    num_classes: int = 1000
    in_channels: int = 3
    resolution: int = 224
    dropout: float = 0.2
    drop_connect: float = 0.2
    activation: Activation = Activation.SILU

    def __post_init__(self) -> None:
        if isinstance(self.stages, list):
            object.__setattr__(self, "stages", tuple(self.stages))
        if not isinstance(self.stages, tuple) or not self.stages:
            raise ValueError(f"stages must be a non-empty sequence of BlockSpec, got {self.stages!r}")
        for i, stage in enumerate(self.stages):
            if not isinstance(stage, BlockSpec):
                raise ValueError(f"stages[{i}] must be a BlockSpec, got {type(stage).__name__}")
        try:
            object.__setattr__(self, "activation", Activation(self.activation))
        except ValueError:
            valid = ", ".join(a.value for a in Activation)
            raise ValueError(f"activation must be one of {valid}, got {self.activation!r}") from None
        for name in ("dropout", "drop_connect"):
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, name, float(value))
        _check_int("stem", self.stem, 1)
        _check_int("head", self.head, 1)
        _check_int("num_classes", self.num_classes, 1)
        _check_int("in_channels", self.in_channels, 1)
        _check_int("resolution", self.resolution, 32)
        _check_real("dropout", self.dropout, 0.0, 1.0, high_open=True)
        _check_real("drop_connect", self.drop_connect, 0.0, 1.0, high_open=True)
        previous = self.stem
        for i, stage in enumerate(self.stages):
            if stage.in_filters != previous:
                where = "stem" if i == 0 else f"stages[{i - 1}].out_filters"
                raise ValueError(f"channel mismatch: stages[{i}].in_filters={stage.in_filters} but "
                                 f"{where}={previous}")
            previous = stage.out_filters

    # -- convenience ---------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        """Total number of layers (blocks) over all stages."""
        return sum(s.repeats for s in self.stages)

    @property
    def last_filters(self) -> int:
        return self.stages[-1].out_filters

    @property
    def plain_layers(self) -> int:
        """Layers without a shortcut (neither the identity residual nor the pool skip). On a short
        proxy run this count alone ranks networks of a space with the skip choice about as well as
        the proxy ranks itself (README: "And a count ranks the proxy better than any supernet")."""
        return sum(s.shortcut(cin, stride) is None for s in self.stages for cin, _, stride in s.layers())

    def network_key(self) -> tuple:
        """The network this spec builds, as a hashable value: two specs with equal keys build the
        same model (same modules in the same order, same shortcuts, same drop-connect rates).
        Unlike the spec (and its string), it does not see a choice that changes nothing, such as
        the skip op of a stage none of whose layers can have a shortcut, or how a run of identical
        layers is split between two stride-1 stages of the same width."""
        layers = tuple(stage.layer_key(cin, stride) for stage in self.stages
                       for cin, _, stride in stage.layers())
        return (self.stem, self.head, self.num_classes, self.in_channels, self.resolution, self.dropout,
                self.drop_connect, self.activation.value, layers)

    def replace(self, **changes: Any) -> ArchSpec:
        """A new, validated spec with some fields changed (the original is untouched)."""
        return replace(self, **changes)

    def to_string(self) -> str:
        return codec.encode_arch(self)

    @classmethod
    def from_string(cls, text: str, **defaults: Any) -> ArchSpec:
        """Parse :meth:`to_string` output, or bare official block strings (fields they do not carry
        take ``defaults`` or the dataclass defaults)."""
        return decode_arch(text, **defaults)

    def to_timm_arch_def(self) -> list[list[str]]:
        """timm's ``arch_def`` for this spec (see :func:`search_space.codec.to_timm_arch_def` for the
        matching ``EfficientNet`` constructor arguments). Raises ``ValueError`` naming the stage
        for what timm's blocks cannot express (e.g. squeeze-excite on a regular conv)."""
        return codec.to_timm_arch_def(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (enums as their values)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "stages":
                value = [{g.name: (getattr(s, g.name).value if isinstance(getattr(s, g.name), Enum)
                                   else getattr(s, g.name)) for g in fields(s)} for s in value]
            elif isinstance(value, Enum):
                value = value.value
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchSpec:
        if not isinstance(data, dict) or "stages" not in data:
            raise ValueError("an ArchSpec dict needs a 'stages' list")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown ArchSpec field(s) {sorted(unknown)}; valid: {sorted(known)}")
        stage_fields = {f.name for f in fields(BlockSpec)}
        if not isinstance(data["stages"], (list, tuple)):
            raise ValueError(f"stages must be a list of stage dicts, got {data['stages']!r}")
        stages = []
        for i, s in enumerate(data["stages"]):
            if not isinstance(s, dict) or set(s) - stage_fields:
                raise ValueError(f"stages[{i}] must be a dict with keys from {sorted(stage_fields)}")
            try:
                stages.append(BlockSpec(**s))
            except TypeError as exc:
                raise ValueError(f"stages[{i}]: {exc}") from None
        return cls(**{**data, "stages": tuple(stages)})



# -- strings (the grammar is codec's; validation is the dataclasses') --------------------------------


def encode_block(block: BlockSpec) -> str:
    """Official block string of one stage (``c1`` added for a regular conv)."""
    return codec.encode_block(block)


def encode_arch(spec: ArchSpec) -> str:
    return codec.encode_arch(spec)


def to_timm_arch_def(spec: ArchSpec) -> list[list[str]]:
    """timm's ``arch_def``: one list of block strings per stage (``ds_``, ``ir_``, ``cn_``).
    Raises ``ValueError`` naming the stage for what timm cannot express (see
    :func:`search_space.codec.to_timm_arch_def`)."""
    return codec.to_timm_arch_def(spec)


def decode_block(token: str) -> BlockSpec:
    """Parse one official block string. Raises ValueError naming the token and the bad part."""
    fields_ = codec.parse_block(token)
    try:
        return BlockSpec(**{**fields_, "conv_type": ConvType(fields_["conv_type"])})
    except ValueError as exc:
        raise codec.bad_block(token, str(exc)) from None


def decode_arch(text: str, **defaults: Any) -> ArchSpec:
    """Parse :func:`encode_arch` output or bare block strings; ``defaults`` fill missing fields."""
    fields_, tokens = codec.parse_arch(text, tuple(a.value for a in Activation))
    stages = [decode_block(t) for t in tokens]
    merged = {**defaults, **fields_}
    merged.setdefault("stem", stages[0].in_filters)
    try:
        return ArchSpec(stages=tuple(stages), **merged)
    except TypeError as exc:
        raise ValueError(f"bad default for ArchSpec: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"inconsistent architecture string: {exc}") from None
