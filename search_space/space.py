"""The MnasNet factorized hierarchical search space, as data.

The network is cut into the base's stages (EfficientNet-B0's seven by default). Each stage
chooses, independently of the others:

* ``op``: ``mbconv`` (inverted bottleneck) or ``conv`` (regular conv); ``ds`` may be listed too.
* ``expand``: expansion ratio of an ``mbconv`` stage (conditional: only asked when op is mbconv).
  Expansion 1 *is* the depthwise-separable conv, so the default {1, 3, 6} together with
  ``conv`` gives the paper's four ops {regular conv, depthwise-separable, MBConv 3, MBConv 6}.
* ``kernel``, ``se`` ratio, ``skip`` (``identity`` residual or ``none``),
* ``filters``: the output width, ``round_filters(base_width, m)`` for each multiplier m. Rounding
  can map two multipliers to one width (16 x 0.75 rounds back to 16), so the choices are the
  *distinct* widths, and the trial table shows widths;
* ``layers``: a delta to the base's repeat count; deltas that would leave a stage empty are
  dropped (not clamped), so that no two choices give the same spec.

``size`` counts distinct specs. One choice can leave the *network* unchanged: ``skip`` on a
stage none of whose layers can be residual (e.g. a single stride-2 layer) changes the spec string
but not the computation.

Layers inside a stage are identical; only the first has the stage's stride (MnasNet's rule).
The stem, head and strides come from the base.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Protocol

from .references import reference_spec
from .resolve import resolve_arch
from .scaling import round_filters
from .spec import ArchSpec, BlockSpec, ConvType

__all__ = ["SearchSpace", "StageChoices", "default_space", "SKIP_CHOICES"]

SKIP_CHOICES = ("identity", "none")
_OPS = ("mbconv", "ds", "conv")


class _Trial(Protocol):  # what sample() needs from an optuna.Trial (also FixedTrial)
    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


@dataclass(frozen=True)
class StageChoices:
    """The choices of one stage, already resolved against the base (widths, deltas)."""

    index: int  # 1-based, as in the parameter names s1_..., s7_...
    base: BlockSpec
    ops: tuple[str, ...]
    expand_ratios: tuple[int | float, ...]
    kernels: tuple[int, ...]
    se_ratios: tuple[float, ...]
    skips: tuple[str, ...]
    widths: tuple[int, ...]
    layer_deltas: tuple[int, ...]

    def name(self, what: str) -> str:
        return f"s{self.index}_{what}"

    @property
    def op_variants(self) -> int:
        return sum(len(self.expand_ratios) if op == "mbconv" else 1 for op in self.ops)

    @property
    def size(self) -> int:
        return (self.op_variants * len(self.kernels) * len(self.se_ratios) * len(self.skips)
                * len(self.widths) * len(self.layer_deltas))


def _tuple(name: str, values: Iterable[Any]) -> tuple:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(f"space.{name} must be a list, got {values!r}")
    out = tuple(values)
    if not out:
        raise ValueError(f"space.{name} must not be empty")
    if len(set(out)) != len(out):
        raise ValueError(f"space.{name} has duplicates: {list(out)}")
    return out


@dataclass(frozen=True)
class SearchSpace:
    """A factorized hierarchical space over ``base``'s stages (defaults: the paper's choices)."""

    base: ArchSpec = field(default_factory=lambda: reference_spec("efficientnet-b0"))
    ops: tuple[str, ...] = ("mbconv", "conv")
    expand_ratios: tuple[int | float, ...] = (1, 3, 6)
    kernels: tuple[int, ...] = (3, 5)
    se_ratios: tuple[float, ...] = (0.0, 0.25)
    skips: tuple[str, ...] = SKIP_CHOICES
    filter_multipliers: tuple[float, ...] = (0.75, 1.0, 1.25)
    layer_deltas: tuple[int, ...] = (-1, 0, 1)

    def __post_init__(self) -> None:
        if not isinstance(self.base, ArchSpec):
            raise ValueError(f"space.base must be an ArchSpec, got {type(self.base).__name__}")
        for name in ("ops", "expand_ratios", "kernels", "se_ratios", "skips", "filter_multipliers",
                     "layer_deltas"):
            object.__setattr__(self, name, _tuple(name, getattr(self, name)))
        for op in self.ops:
            if op not in _OPS:
                raise ValueError(f"space.ops: unknown op {op!r}; valid: {', '.join(_OPS)}")
        if "ds" in self.ops and "mbconv" in self.ops and 1 in self.expand_ratios:
            raise ValueError("space.ops lists 'ds' and 'mbconv' with expansion 1, which is the same "
                             "depthwise-separable conv twice: drop one")
        for e in self.expand_ratios:
            if isinstance(e, bool) or not isinstance(e, (int, float)) or e < 1:
                raise ValueError(f"space.expand_ratios: each must be a number >= 1, got {e!r}")
        for k in self.kernels:
            if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
                raise ValueError(f"space.kernels: each must be an odd positive integer, got {k!r}")
        for s in self.se_ratios:
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s <= 1:
                raise ValueError(f"space.se_ratios: each must be in [0, 1], got {s!r}")
        object.__setattr__(self, "se_ratios", tuple(float(s) for s in self.se_ratios))
        for s in self.skips:
            if s not in SKIP_CHOICES:
                raise ValueError(f"space.skips: unknown skip {s!r}; valid: identity, none")
        for m in self.filter_multipliers:
            if isinstance(m, bool) or not isinstance(m, (int, float)) or not m > 0 or not math.isfinite(m):
                raise ValueError(f"space.filter_multipliers: each must be > 0, got {m!r}")
        for d in self.layer_deltas:
            if isinstance(d, bool) or not isinstance(d, int):
                raise ValueError(f"space.layer_deltas: each must be an integer, got {d!r}")
        for st in self.stages:
            if not st.layer_deltas:
                raise ValueError(f"space.layer_deltas {list(self.layer_deltas)} leave stage "
                                 f"{st.index} (base repeats {st.base.repeats}) with no layers")

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None = None, *, num_classes: int = 1000,
                    in_channels: int = 3, resolution: int | None = None) -> SearchSpace:
        """Build from a plain dict (e.g. Hydra's ``space`` group): keys are the field names, and
        ``base`` is a reference name or an architecture string."""
        cfg = dict(cfg or {})
        base = cfg.pop("base", "efficientnet-b0")
        known = {"ops", "expand_ratios", "kernels", "se_ratios", "skips", "filter_multipliers",
                 "layer_deltas"}
        unknown = set(cfg) - known - {"name"}
        if unknown:
            raise ValueError(f"unknown space option(s) {sorted(unknown)}; valid: base, {', '.join(sorted(known))}")
        spec = resolve_arch(base, what="space.base").spec(num_classes, in_channels)
        spec = spec.replace(num_classes=num_classes, in_channels=in_channels,
                            **({"resolution": resolution} if resolution else {}))
        return cls(base=spec, **{k: tuple(v) for k, v in cfg.items() if k in known})

    # -- structure --------------------------------------------------------------------------
    @property
    def stages(self) -> tuple[StageChoices, ...]:
        out = []
        for i, st in enumerate(self.base.stages, start=1):
            widths = tuple(sorted({round_filters(st.out_filters, m) for m in self.filter_multipliers}))
            deltas = tuple(d for d in self.layer_deltas if st.repeats + d >= 1)
            out.append(StageChoices(i, st, self.ops, self.expand_ratios, self.kernels,
                                    self.se_ratios, self.skips, widths, deltas))
        return tuple(out)

    @property
    def size(self) -> int:
        """Number of distinct architectures (= distinct parameter assignments = distinct specs)."""
        return math.prod(st.size for st in self.stages)

    # -- sampling ---------------------------------------------------------------------------
    def sample(self, trial: _Trial) -> ArchSpec:
        """Ask ``trial`` for every choice (``suggest_categorical``) and return the spec."""
        stages = []
        prev = self.base.stem
        for st in self.stages:
            op = trial.suggest_categorical(st.name("op"), list(st.ops))
            expand = trial.suggest_categorical(st.name("expand"), list(st.expand_ratios)) \
                if op == "mbconv" else 1
            if op == "mbconv":
                conv_type = ConvType.DS if expand == 1 else ConvType.MBCONV
            else:
                conv_type = ConvType(op)
            block = BlockSpec(
                repeats=st.base.repeats + trial.suggest_categorical(st.name("layers"), list(st.layer_deltas)),
                kernel=trial.suggest_categorical(st.name("kernel"), list(st.kernels)),
                stride=st.base.stride,
                expand_ratio=expand,
                in_filters=prev,
                out_filters=trial.suggest_categorical(st.name("filters"), list(st.widths)),
                se_ratio=trial.suggest_categorical(st.name("se"), list(st.se_ratios)),
                id_skip=trial.suggest_categorical(st.name("skip"), list(st.skips)) == "identity",
                conv_type=conv_type,
            )
            stages.append(block)
            prev = block.out_filters
        return replace(self.base, stages=tuple(stages))

    def params_of(self, spec: ArchSpec, snap: bool = False) -> dict[str, Any]:
        """The trial parameters that make :meth:`sample` return ``spec`` (for enqueue_trial).

        ``snap=True`` maps a foreign architecture onto this space: each stage width becomes the
        nearest width choice (MnasNet-A1's 160 -> 144 on the B0 base), and stem, head,
        activation and strides are the base's. Without it, anything not representable raises
        ``ValueError`` naming the stage and the value."""
        if len(spec.stages) != len(self.base.stages):
            raise ValueError(f"spec has {len(spec.stages)} stages, the space has {len(self.base.stages)}")
        params: dict[str, Any] = {}
        for st, block in zip(self.stages, spec.stages):
            def need(ok: bool, what: str, value: Any, valid: Any) -> None:
                if not ok:
                    raise ValueError(f"stage {st.index}: {what} {value!r} is not in the space "
                                     f"(valid: {valid})")

            need(block.stride == st.base.stride, "stride", block.stride, [st.base.stride])
            if block.conv_type is ConvType.CONV:
                need("conv" in st.ops, "op", "conv", list(st.ops))
                params[st.name("op")] = "conv"
            elif block.conv_type is ConvType.DS and "ds" in st.ops:
                params[st.name("op")] = "ds"
            else:
                need("mbconv" in st.ops, "op", block.conv_type.value, list(st.ops))
                need(block.expand_ratio in st.expand_ratios, "expand_ratio", block.expand_ratio,
                     list(st.expand_ratios))
                params[st.name("op")] = "mbconv"
                params[st.name("expand")] = block.expand_ratio
            delta = block.repeats - st.base.repeats
            need(delta in st.layer_deltas, "layer delta", delta, list(st.layer_deltas))
            params[st.name("layers")] = delta
            need(block.kernel in st.kernels, "kernel", block.kernel, list(st.kernels))
            params[st.name("kernel")] = block.kernel
            width = block.out_filters
            if snap:
                width = min(st.widths, key=lambda w: (abs(w - width), w))
            need(width in st.widths, "out_filters", width, list(st.widths))
            params[st.name("filters")] = width
            need(block.se_ratio in st.se_ratios, "se_ratio", block.se_ratio, list(st.se_ratios))
            params[st.name("se")] = block.se_ratio
            skip = "identity" if block.id_skip else "none"
            need(skip in st.skips, "skip", skip, list(st.skips))
            params[st.name("skip")] = skip
        if not snap:
            for name in ("stem", "head", "activation"):
                if getattr(spec, name) != getattr(self.base, name):
                    raise ValueError(f"{name} {getattr(spec, name)!r} differs from the space's base "
                                     f"{getattr(self.base, name)!r} (use snap=True to map it)")
        return params

    def param_names(self) -> list[str]:
        return [st.name(w) for st in self.stages
                for w in ("op", "expand", "kernel", "se", "skip", "filters", "layers")]


def default_space(num_classes: int = 1000, in_channels: int = 3, resolution: int | None = None) -> SearchSpace:
    """The paper's space over EfficientNet-B0's stages."""
    return SearchSpace.from_config({}, num_classes=num_classes, in_channels=in_channels,
                                   resolution=resolution)
