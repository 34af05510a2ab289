"""The MnasNet factorized hierarchical search space, as data.

The network is cut into the base's stages (EfficientNet-B0's seven by default). Each stage
chooses, independently of the others:

* ``op``: ``mbconv`` (inverted bottleneck) or ``conv`` (regular conv); ``ds`` may be listed too.
* ``expand``: expansion ratio of an ``mbconv`` stage (conditional: only asked when op is mbconv).
  Expansion 1 *is* the depthwise-separable conv, so the default {1, 3, 6} together with
  ``conv`` gives the paper's four ops {regular conv, depthwise-separable, MBConv 3, MBConv 6}.
* ``kernel``, ``se`` ratio, ``skip`` (``identity`` residual, ``none``, or MnasNet's ``pool``ing
  skip, defined in :class:`~search_space.spec.BlockSpec`; the default lists identity and none),
* ``filters``: the output width, ``round_filters(base_width, m)`` for each multiplier m, plus the
  stage's width in every *included* network (below). Rounding can map two multipliers to one
  width (16 x 0.75 rounds back to 16), so the choices are the *distinct* widths, and the trial
  table shows widths;
* ``layers``: a delta to the base's repeat count; deltas that would leave a stage empty are
  dropped (not clamped), so that no two choices give the same spec.

and global choices: ``activation`` (the base's, plus those of the included networks), and --
only where their multipliers list more than one width -- ``stem`` and ``head``, the stem's and the
head's widths, ``round_filters(base width, m)`` for each of ``stem_multipliers`` and
``head_multipliers`` (default ``[1.0]``: the base's, not a choice, as in MnasNet). A small network
of the default space keeps B0's 1,280-wide head, which at 32 px is a large share of a few million
FLOPs; EfficientNet's scaled-down networks shrink stem and head with the width, and
``head_multipliers=[0.5, 0.75, 1.0]`` lets the search do the same.

**Included networks** (``include``) are published networks made exact points of the space: their
stage widths join the width choices and their activation the activation choices, so that the
warm start trains *them*, not a neighbour. By default (``include=None``) they are EfficientNet-B0
and MnasNet-A1 -- ``nas-search``'s default warm starts -- each where it fits the base: the same
stem, head, number of stages and strides, and every other choice (op, expansion, kernel, SE,
skip, layer delta) already in the space. On the B0 base that adds A1's 160 filters to stage 6
and ReLU to the activations; on a base they do not fit, nothing. ``include=[]`` is the paper's
space as it stands; a listed network that does not fit is an error.

The strides, dropout and drop-connect (and the stem and head, unless they are choices) come from
the base: they are the search's, the same for every trial (a warm-started MnasNet-A1 trains with
the base's drop-connect 0.2, not with none as published; its network -- layers, widths,
activation -- is exactly A1's).

Counting: :attr:`SearchSpace.assignments` counts parameter assignments, which are distinct specs
(architecture strings); :attr:`SearchSpace.size` counts distinct *networks*
(:meth:`ArchSpec.network_key`), fewer because some choices change the string but not the
computation: the skip op of a stage none of whose layers can have a shortcut, ``pool`` on a stage
whose layers all keep their shape (it is then the identity), and two stride-1 stages of the same
width and layer type, which only split one run of identical layers differently.

Layers inside a stage are identical; only the first has the stage's stride (MnasNet's rule).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Iterable, Protocol

from .references import reference_spec
from .resolve import resolve_arch
from .scaling import round_filters
from .spec import Activation, ArchSpec, BlockSpec, ConvType

__all__ = ["SearchSpace", "StageChoices", "default_space", "SKIP_CHOICES", "SKIP_OPS", "AUTO_INCLUDE"]

SKIP_CHOICES = ("identity", "none")  # the default ``skips``
SKIP_OPS = ("identity", "none", "pool")  # every valid skip op
AUTO_INCLUDE = ("efficientnet-b0", "mnasnet-a1")  # include=None: these, where they fit the base
_OPS = ("mbconv", "ds", "conv")
_FIELDS = ("ops", "expand_ratios", "kernels", "se_ratios", "skips", "filter_multipliers", "layer_deltas",
           "stem_multipliers", "head_multipliers")


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
        """Parameter assignments of this stage (not all of them distinct networks: see the module doc)."""
        return (self.op_variants * len(self.kernels) * len(self.se_ratios) * len(self.skips)
                * len(self.widths) * len(self.layer_deltas))

    def variants(self) -> list[tuple[str, ConvType, int | float]]:
        """``(op, conv_type, expand_ratio)`` of each op choice."""
        out = []
        for op in self.ops:
            if op == "mbconv":
                out += [(op, ConvType.DS if e == 1 else ConvType.MBCONV, e) for e in self.expand_ratios]
            else:
                out.append((op, ConvType(op), 1))
        return out


def _tuple(name: str, values: Iterable[Any], *, allow_empty: bool = False) -> tuple:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(f"space.{name} must be a list, got {values!r}")
    out = tuple(values)
    if not out and not allow_empty:
        raise ValueError(f"space.{name} must not be empty")
    if len(set(out)) != len(out):
        raise ValueError(f"space.{name} has duplicates: {list(out)}")
    return out


def _label(item: Any) -> str:
    return item if isinstance(item, str) else "an architecture"


@dataclass(frozen=True)
class SearchSpace:
    """A factorized hierarchical space over ``base``'s stages (defaults: the paper's choices, plus
    the widths and activation of the included networks; see the module doc)."""

    base: ArchSpec = field(default_factory=lambda: reference_spec("efficientnet-b0"))
    ops: tuple[str, ...] = ("mbconv", "conv")
    expand_ratios: tuple[int | float, ...] = (1, 3, 6)
    kernels: tuple[int, ...] = (3, 5)
    se_ratios: tuple[float, ...] = (0.0, 0.25)
    skips: tuple[str, ...] = SKIP_CHOICES
    filter_multipliers: tuple[float, ...] = (0.75, 1.0, 1.25)
    layer_deltas: tuple[int, ...] = (-1, 0, 1)
    stem_multipliers: tuple[float, ...] = (1.0,)
    head_multipliers: tuple[float, ...] = (1.0,)
    include: tuple[str | ArchSpec, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.base, ArchSpec):
            raise ValueError(f"space.base must be an ArchSpec, got {type(self.base).__name__}")
        for name in _FIELDS:
            object.__setattr__(self, name, _tuple(name, getattr(self, name)))
        for op in self.ops:
            if op not in _OPS:
                raise ValueError(f"space.ops: unknown op {op!r}; valid: {', '.join(_OPS)}")
        if "ds" in self.ops and "mbconv" in self.ops and 1 in self.expand_ratios:
            raise ValueError("space.ops lists 'ds' and 'mbconv' with expansion 1, which is the same "
                             "depthwise-separable conv twice: drop one")
        for e in self.expand_ratios:
            if isinstance(e, bool) or not isinstance(e, (int, float)) or not math.isfinite(e) or e < 1:
                raise ValueError(f"space.expand_ratios: each must be a number >= 1, got {e!r}")
        if len({float(e) for e in self.expand_ratios}) != len(self.expand_ratios):
            raise ValueError(f"space.expand_ratios has duplicates: {list(self.expand_ratios)}")
        for k in self.kernels:
            if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
                raise ValueError(f"space.kernels: each must be an odd positive integer, got {k!r}")
        for s in self.se_ratios:
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s <= 1:
                raise ValueError(f"space.se_ratios: each must be in [0, 1], got {s!r}")
        object.__setattr__(self, "se_ratios", tuple(float(s) for s in self.se_ratios))
        if len(set(self.se_ratios)) != len(self.se_ratios):
            raise ValueError(f"space.se_ratios has duplicates: {list(self.se_ratios)}")
        for s in self.skips:
            if s not in SKIP_OPS:
                raise ValueError(f"space.skips: unknown skip {s!r}; valid: {', '.join(SKIP_OPS)}")
        for name in ("filter_multipliers", "stem_multipliers", "head_multipliers"):
            for m in getattr(self, name):
                if isinstance(m, bool) or not isinstance(m, (int, float)) or not m > 0 or not math.isfinite(m):
                    raise ValueError(f"space.{name}: each must be > 0, got {m!r}")
        object.__setattr__(self, "_stems", tuple(sorted({round_filters(self.base.stem, m)
                                                          for m in self.stem_multipliers})))
        object.__setattr__(self, "_heads", tuple(sorted({round_filters(self.base.head, m)
                                                          for m in self.head_multipliers})))
        for d in self.layer_deltas:
            if isinstance(d, bool) or not isinstance(d, int):
                raise ValueError(f"space.layer_deltas: each must be an integer, got {d!r}")
        plain = self._stage_choices({})
        for st in plain:
            if not st.layer_deltas:
                raise ValueError(f"space.layer_deltas {list(self.layer_deltas)} leave stage "
                                 f"{st.index} (base repeats {st.base.repeats}) with no layers")
        included = self._resolve_include(plain)
        extra = {i: {s.stages[i].out_filters for s in included} for i in range(len(plain))}
        object.__setattr__(self, "_stages", self._stage_choices(extra))
        object.__setattr__(self, "_included", tuple(included))
        activations = [self.base.activation.value]
        for spec in included:
            if spec.activation.value not in activations:
                activations.append(spec.activation.value)
        object.__setattr__(self, "_activations", tuple(activations))

    def _stage_choices(self, extra: dict[int, set[int]]) -> tuple[StageChoices, ...]:
        out = []
        for i, st in enumerate(self.base.stages):
            widths = {round_filters(st.out_filters, m) for m in self.filter_multipliers} | extra.get(i, set())
            deltas = tuple(d for d in self.layer_deltas if st.repeats + d >= 1)
            out.append(StageChoices(i + 1, st, self.ops, self.expand_ratios, self.kernels,
                                    self.se_ratios, self.skips, tuple(sorted(widths)), deltas))
        return tuple(out)

    def _resolve_include(self, plain: tuple[StageChoices, ...]) -> list[ArchSpec]:
        strict = self.include is not None
        items = AUTO_INCLUDE if self.include is None else _tuple("include", self.include, allow_empty=True)
        if strict:
            object.__setattr__(self, "include", items)
        head = {"num_classes": self.base.num_classes, "in_channels": self.base.in_channels}
        out = []
        for item in items:
            if isinstance(item, ArchSpec):
                spec = item
            elif isinstance(item, str):
                spec = resolve_arch(item, what="space.include").spec(**head)
            else:
                raise ValueError(f"space.include: each must be a reference name, architecture string "
                                 f"or best.json, got {item!r}")
            spec = spec.replace(**head, resolution=self.base.resolution)
            try:
                self._params(plain, spec, widths="any", activation="any")
                self._ends(spec, snap=False)
            except ValueError as exc:
                if strict:
                    raise ValueError(f"space.include: {_label(item)} cannot be a point of this space: "
                                     f"{exc}") from None
                continue
            out.append(spec)
        return out

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None = None, *, num_classes: int = 1000,
                    in_channels: int = 3, resolution: int | None = None) -> SearchSpace:
        """Build from a plain dict (e.g. Hydra's ``space`` group): keys are the field names, and
        ``base`` is a reference name or an architecture string; ``include`` a list of them (or
        null: the default warm starts where they fit)."""
        cfg = dict(cfg or {})
        base = cfg.pop("base", "efficientnet-b0")
        known = set(_FIELDS) | {"include"}
        unknown = set(cfg) - known - {"name"}
        if unknown:
            raise ValueError(f"unknown space option(s) {sorted(unknown)}; valid: base, {', '.join(sorted(known))}")
        spec = resolve_arch(base, what="space.base").spec(num_classes, in_channels)
        spec = spec.replace(num_classes=num_classes, in_channels=in_channels,
                            **({"resolution": resolution} if resolution else {}))
        values = {k: (v if k == "include" and v is None else _tuple(k, v, allow_empty=k == "include"))
                  for k, v in cfg.items() if k in known}
        return cls(base=spec, **values)

    # -- structure --------------------------------------------------------------------------
    @property
    def stages(self) -> tuple[StageChoices, ...]:
        return self._stages  # type: ignore[attr-defined]

    @property
    def included(self) -> tuple[ArchSpec, ...]:
        """The included networks (resolved; with the base's classes, channels and resolution)."""
        return self._included  # type: ignore[attr-defined]

    @property
    def stems(self) -> tuple[int, ...]:
        """The stem width choices (one: the base's, unless ``stem_multipliers`` lists more)."""
        return self._stems  # type: ignore[attr-defined]

    @property
    def heads(self) -> tuple[int, ...]:
        """The head width choices (one: the base's, unless ``head_multipliers`` lists more)."""
        return self._heads  # type: ignore[attr-defined]

    @property
    def activations(self) -> tuple[str, ...]:
        """The activation choices: the base's, then the included networks'."""
        return self._activations  # type: ignore[attr-defined]

    @property
    def assignments(self) -> int:
        """Number of parameter assignments (= distinct specs and architecture strings)."""
        return math.prod(st.size for st in self.stages) * len(self.activations) * len(self.stems) * len(self.heads)

    @cached_property
    def size(self) -> int:
        """Number of distinct networks (distinct :meth:`ArchSpec.network_key`); at most
        :attr:`assignments`. Exact: counted over the layer sequences the space can build."""
        return sum(_count_networks(self.stages, stem) for stem in self.stems) * len(self.activations) \
            * len(self.heads)

    # -- sampling ---------------------------------------------------------------------------
    def sample(self, trial: _Trial) -> ArchSpec:
        """Ask ``trial`` for every choice (``suggest_categorical``) and return the spec."""
        stages = []
        stem = trial.suggest_categorical("stem", list(self.stems)) if len(self.stems) > 1 else self.stems[0]
        prev = stem
        for st in self.stages:
            op = trial.suggest_categorical(st.name("op"), list(st.ops))
            expand = trial.suggest_categorical(st.name("expand"), list(st.expand_ratios)) \
                if op == "mbconv" else 1
            if op == "mbconv":
                conv_type = ConvType.DS if expand == 1 else ConvType.MBCONV
            else:
                conv_type = ConvType(op)
            repeats = st.base.repeats + trial.suggest_categorical(st.name("layers"), list(st.layer_deltas))
            kernel = trial.suggest_categorical(st.name("kernel"), list(st.kernels))
            out_filters = trial.suggest_categorical(st.name("filters"), list(st.widths))
            se_ratio = trial.suggest_categorical(st.name("se"), list(st.se_ratios))
            skip = trial.suggest_categorical(st.name("skip"), list(st.skips))
            block = BlockSpec(repeats=repeats, kernel=kernel, stride=st.base.stride, expand_ratio=expand,
                              in_filters=prev, out_filters=out_filters, se_ratio=se_ratio,
                              id_skip=skip != "none", pool_skip=skip == "pool", conv_type=conv_type)
            stages.append(block)
            prev = block.out_filters
        head = trial.suggest_categorical("head", list(self.heads)) if len(self.heads) > 1 else self.heads[0]
        activation = trial.suggest_categorical("activation", list(self.activations))
        return replace(self.base, stem=stem, head=head, stages=tuple(stages), activation=Activation(activation))

    def params_of(self, spec: ArchSpec, snap: bool = False) -> dict[str, Any]:
        """The trial parameters that make :meth:`sample` return ``spec`` (for enqueue_trial), with
        the base's dropout, drop-connect and resolution (the search's, not choices).

        ``snap=True`` maps a foreign architecture onto this space: each stage width becomes the
        nearest width choice (MnasNet-A1's 160 -> 144 in a B0-based space without A1 included), an
        activation that is not a choice becomes the base's, and stem and head become the nearest
        of their choices. An included network needs no snapping. Without it, anything not
        representable raises ``ValueError`` naming the stage and the value."""
        ends = self._ends(spec, snap)
        params = self._params(self.stages, spec, widths="snap" if snap else "exact",
                              activation="snap" if snap else "exact")
        return {**({"stem": ends["stem"]} if "stem" in ends else {}), **params,
                **({"head": ends["head"]} if "head" in ends else {})}

    def _ends(self, spec: ArchSpec, snap: bool) -> dict[str, int]:
        """The ``stem`` / ``head`` parameters of ``spec`` (only those that are choices)."""
        out = {}
        for name, choices in (("stem", self.stems), ("head", self.heads)):
            value = getattr(spec, name)
            if snap:
                value = _nearest(choices, value)
            elif value not in choices:
                raise ValueError(f"{name} {value!r} is not in the space (valid: {list(choices)})")
            if len(choices) > 1:
                out[name] = value
        return out

    def _params(self, stages: tuple[StageChoices, ...], spec: ArchSpec, *, widths: str,
                activation: str) -> dict[str, Any]:
        """params_of's work; ``widths``/``activation``: "exact", "snap" or "any" (not checked)."""
        if len(spec.stages) != len(stages):
            raise ValueError(f"spec has {len(spec.stages)} stages, the space has {len(stages)}")
        params: dict[str, Any] = {}
        for st, block in zip(stages, spec.stages):
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
            if widths == "snap":
                width = _nearest(st.widths, width)
            if widths != "any":
                need(width in st.widths, "out_filters", width, list(st.widths))
            params[st.name("filters")] = width
            need(block.se_ratio in st.se_ratios, "se_ratio", block.se_ratio, list(st.se_ratios))
            params[st.name("se")] = block.se_ratio
            need(block.skip in st.skips, "skip", block.skip, list(st.skips))
            params[st.name("skip")] = block.skip
        act = spec.activation.value
        if activation != "any" and act not in self.activations:
            if activation == "exact":
                raise ValueError(f"activation {act!r} is not in the space (valid: {list(self.activations)}; "
                                 f"use snap=True to map it to the base's)")
            act = self.base.activation.value
        params["activation"] = act
        return params

    def param_names(self) -> list[str]:
        return ["stem"] * (len(self.stems) > 1) + [
            st.name(w) for st in self.stages for w in ("op", "expand", "kernel", "se", "skip", "filters", "layers")
        ] + ["head"] * (len(self.heads) > 1) + ["activation"]


def _nearest(choices: Iterable[int], width: int) -> int:
    """The width choice closest to ``width`` (the smaller on a tie): how ``snap`` maps widths."""
    return min(choices, key=lambda w: (abs(w - width), w))


def _count_networks(stages: tuple[StageChoices, ...], stem: int) -> int:
    """Distinct layer sequences (:meth:`BlockSpec.layer_key` per layer) the stages can build.

    Spec -> layers is many-to-one (module doc), so this counts the words of a finite language:
    an automaton reads a network layer by layer, in states ``(stage, width, repeat layer, layers
    of the stage so far)``; a layer that two parses can read (the repeat of one stride-1 stage
    and the first layer of the next) leads to the set of both states (subset construction), and
    the words are counted from each set of states once, memoised."""
    n = len(stages)
    reps = [frozenset(st.base.repeats + d for d in st.layer_deltas) for st in stages]
    most = [max(r) for r in reps]
    tables: dict[tuple[int, int], dict[tuple, frozenset]] = {}
    memo: dict[frozenset, int] = {}
    fsums: dict[tuple[int, int], int] = {}

    def table(i: int, cin: int) -> dict[tuple, frozenset]:
        """First layers of stage ``i`` on a ``cin``-wide input -> the states they lead to."""
        key = (i, cin)
        if key not in tables:
            st, out = stages[i], {}
            for _, conv_type, e in st.variants():
                for k in st.kernels:
                    for se in st.se_ratios:
                        for skip in st.skips:
                            for w in st.widths:
                                block = BlockSpec(repeats=1, kernel=k, stride=st.base.stride, expand_ratio=e,
                                                  in_filters=cin, out_filters=w, se_ratio=se,
                                                  id_skip=skip != "none", pool_skip=skip == "pool",
                                                  conv_type=conv_type)
                                first = block.layer_key(cin, st.base.stride)
                                out.setdefault(first, set()).add((i, w, block.layer_key(w, 1), 1))
            tables[key] = {layer: frozenset(states) for layer, states in out.items()}
        return tables[key]

    def fsum(i: int, cin: int) -> int:
        if (i, cin) not in fsums:
            fsums[(i, cin)] = sum(count(states) for states in table(i, cin).values())
        return fsums[(i, cin)]

    def count(states: frozenset) -> int:
        if states in memo:
            return memo[states]
        accept, finished, repeat = 0, set(), {}
        for i, w, layer, j in states:
            if i < 0 or j in reps[i]:
                if i == n - 1:
                    accept = 1
                else:
                    finished.add((i + 1, w))
            if i >= 0 and j < most[i]:
                repeat.setdefault(layer, set()).add((i, w, layer, j + 1))
        total = accept
        if len(finished) <= 1:
            firsts = {}
            if finished:
                (nxt, w), = finished
                firsts = table(nxt, w)
                total += fsum(nxt, w)
            for layer, more in repeat.items():
                also = firsts.get(layer)
                if also is None:
                    total += count(frozenset(more))
                else:  # this layer can be a repeat or the next stage's first layer: one word
                    total += count(frozenset(more) | also) - count(also)
        else:
            merged: dict[tuple, set] = {}
            for nxt, w in finished:
                for layer, also in table(nxt, w).items():
                    merged.setdefault(layer, set()).update(also)
            for layer, more in repeat.items():
                merged.setdefault(layer, set()).update(more)
            total += sum(count(frozenset(s)) for s in merged.values())
        memo[states] = total
        return total

    limit = sys.getrecursionlimit()
    depth = 4 * sum(most) + 100  # a few frames per layer read
    if depth > limit:
        sys.setrecursionlimit(depth)
    try:
        return count(frozenset({(-1, stem, None, 0)}))
    finally:
        sys.setrecursionlimit(limit)


def default_space(num_classes: int = 1000, in_channels: int = 3, resolution: int | None = None) -> SearchSpace:
    """The paper's space over EfficientNet-B0's stages (with MnasNet-A1 included: see the module doc)."""
    return SearchSpace.from_config({}, num_classes=num_classes, in_channels=in_channels,
                                   resolution=resolution)
