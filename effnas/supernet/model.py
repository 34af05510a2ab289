"""One network that holds every network of a search space: the weight-sharing supernet.

In the style of once-for-all and BigNAS: each stage holds its deepest choice of layers (the base's
repeats plus the largest layer delta), and each layer the largest tensor of every weight. A subnet
takes a prefix of everything:

* **depth**: the first ``repeats`` layers of each stage;
* **width** (a stage's output filters): the first ``w`` output channels of every weight and BN;
* **expansion**: the first ``int(in * e)`` channels of the expanded tensor;
* **SE**: the first ``max(1, int(in * se))`` squeeze channels of the largest SE's convs;
* **kernel**: the centre ``k x k`` crop of the largest depthwise (or dense) kernel. A plain crop, as
  BigNAS does, not once-for-all's learned kernel-transform matrices: the crop is what a
  stand-alone network's weights can be, so a subnet extracts exactly (no transform to fold in).

Which choices share weights:

* ``mbconv`` with every expansion ratio > 1 shares one branch of a layer: the expand 1x1 conv and
  its BN, the depthwise kernel and its BN, the SE convs and the project 1x1 conv, sliced as above.
* ``ds`` (expansion 1: no expand conv, the depthwise kernel sees the layer's input) has a branch of
  its own with the same parts. Sharing the expanded branch's first ``in`` depthwise channels made
  one kernel serve two inputs (an expanded channel and a raw input channel). Measured, the own
  branch did not lift the largest subnet with one stage turned ``ds`` within 16 epochs (0.157
  where it scored 0.175 shared; chance 0.10, unchanged 0.81): only the random subnets train it.
* ``conv`` (the regular, dense kxk conv) has a branch of its own: a dense kernel of the largest
  input, output and kernel size, its BN and its own SE (which squeezes the conv's output, not an
  expanded tensor). Sharing with the depthwise path would tie a dense kernel to a per-channel one
  that computes something else.
* The BN that ends each branch comes twice: one for layers that add the identity shortcut, its
  scale initialised to zero as the stand-alone network's (each residual block starts as the
  identity: without it a deep subnet of dense convs trained through the supernet diverged, loss
  2.62 -> 2.85 in an epoch, where with it, as stand-alone, it fell to 1.21), and one, scale one,
  for layers without it (the ``none`` skip, shape-changing layers, the pooling shortcut).
* Stem, head and classifier are shared by all: the stem's conv and BN are sliced by the stem
  width, the head's 1x1 conv by the last stage's width and the head width, the classifier by the
  head width (stem and head are the base's unless the space makes them choices).
* Skip ops (``identity``, ``none``, ``pool``) and the global ``activation`` have no weights: every
  activation runs on the same weights (the BN statistics are re-estimated per subnet anyway).

Drop-connect is off when the supernet trains (its sandwich of subnets is the regulariser, as in
BigNAS); dropout before the classifier is the base's.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from search_space import ArchSpec, BlockSpec, ConvType, SearchSpace, build_model
from search_space.model import EffNet, MBBlock, pool_shortcut
from search_space.space import StageChoices

__all__ = ["SuperNet", "SuperLayer", "largest_spec", "smallest_spec", "random_spec", "fair_specs"]

_ACT: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"silu": F.silu, "relu": F.relu, "relu6": F.relu6}


def _taps(size: int, kernel: int, stride: int, pad: int) -> tuple[int, int]:
    """Kernel taps ``[lo, hi)`` along one axis that ever touch real input (not padding)."""
    out = (size + 2 * pad - kernel) // stride + 1
    return max(0, pad - (out - 1) * stride), min(kernel, pad + size)


def conv(x: torch.Tensor, weight: torch.Tensor, stride: int = 1, groups: int = 1,
         bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d`` with symmetric ``k // 2`` padding, dropping taps that only see padding (the
    small maps of 32 px inputs: a 5x5 kernel on a 1x1 map is a 1x1 conv); same outputs."""
    k = weight.shape[-1]
    pad = k // 2
    h, w = x.shape[-2:]
    top, bottom = _taps(h, k, stride, pad)
    left, right = _taps(w, k, stride, pad)
    if (top, bottom, left, right) == (0, k, 0, k):
        return F.conv2d(x, weight, bias, stride, pad, 1, groups)
    ph, pw = pad - top, pad - left  # output position o still reads input o * stride - pad + tap
    if (ph >= 0 and pw >= 0 and (h + 2 * ph - (bottom - top)) // stride == (h + 2 * pad - k) // stride
            and (w + 2 * pw - (right - left)) // stride == (w + 2 * pad - k) // stride):
        return F.conv2d(x, weight[:, :, top:bottom, left:right], bias, stride, (ph, pw), 1, groups)
    return F.conv2d(x, weight, bias, stride, pad, 1, groups)


def crop(weight: torch.Tensor, k: int) -> torch.Tensor:
    """The centre ``k x k`` taps of a square kernel."""
    big = weight.shape[-1]
    lo = (big - k) // 2
    return weight[..., lo:lo + k, lo:lo + k]


def _bn(bn: nn.BatchNorm2d, x: torch.Tensor, c: int, training: bool) -> torch.Tensor:
    """Batch norm over the first ``c`` channels of ``bn`` (its statistics are updated in place)."""
    return F.batch_norm(x, bn.running_mean[:c], bn.running_var[:c], bn.weight[:c], bn.bias[:c],
                        training, bn.momentum if bn.momentum is not None else 0.0, bn.eps)


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, c: int) -> None:
    dst.weight.copy_(src.weight[:c])
    dst.bias.copy_(src.bias[:c])
    dst.running_mean.copy_(src.running_mean[:c])
    dst.running_var.copy_(src.running_var[:c])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


class _SE(nn.Module):
    """The largest squeeze-excite of a layer: ``channels`` wide, ``squeezed`` squeeze channels."""

    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeezed, 1, bias=True)
        self.expand = nn.Conv2d(squeezed, channels, 1, bias=True)

    def forward(self, x: torch.Tensor, sq: int, act: Callable) -> torch.Tensor:
        c = x.shape[1]
        s = x.mean((2, 3), keepdim=True)
        s = act(F.conv2d(s, self.reduce.weight[:sq, :c], self.reduce.bias[:sq]))
        s = F.conv2d(s, self.expand.weight[:c, :sq], self.expand.bias[:c])
        return x * torch.sigmoid(s)

    def copy_to(self, dst: nn.Module, c: int, sq: int) -> None:
        dst.reduce.weight.copy_(self.reduce.weight[:sq, :c])
        dst.reduce.bias.copy_(self.reduce.bias[:sq])
        dst.expand.weight.copy_(self.expand.weight[:c, :sq])
        dst.expand.bias.copy_(self.expand.bias[:c])


def _squeezed(cin: int, se_ratios: tuple[float, ...]) -> int:
    return max([max(1, int(cin * r)) for r in se_ratios if r > 0], default=0)


class _LastBN(nn.Module):
    """The BN that ends a layer's branch, one per shortcut kind: ``res`` where the layer adds the
    identity shortcut, its scale initialised to zero as the stand-alone network's (every residual
    block starts as the identity: without it a deep subnet of dense convs diverged where the same
    network trained stand-alone), and ``plain`` where it adds none or the pooling shortcut (scale
    one: a zero there would cut the signal). The two are not shared because the branch's output
    means something else in each: an increment of the input, or the layer's whole output."""

    def __init__(self, c: int, bn_momentum: float, bn_eps: float, residual: bool) -> None:
        super().__init__()
        self.plain = nn.BatchNorm2d(c, momentum=bn_momentum, eps=bn_eps)
        if residual:
            self.res = nn.BatchNorm2d(c, momentum=bn_momentum, eps=bn_eps)
            nn.init.zeros_(self.res.weight)

    def pick(self, residual: bool) -> nn.BatchNorm2d:
        return self.res if residual else self.plain


class _Separable(nn.Module):
    """A depthwise-separable branch: MBConv (``expand``: a 1x1 conv to ``int(in * e)`` channels
    first, ``e`` > 1) or the plain depthwise-separable conv (``expand`` False: the depthwise kernel
    sees the layer's input channels)."""

    def __init__(self, cin: int, mid: int, cout: int, k: int, stride: int, squeezed: int, expand: bool,
                 bn_momentum: float, bn_eps: float, residual: bool) -> None:
        super().__init__()
        self.stride = stride
        if expand:
            self.expand = nn.Conv2d(cin, mid, 1, bias=False)
            self.bn0 = nn.BatchNorm2d(mid, momentum=bn_momentum, eps=bn_eps)
        self.dw = nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False)
        self.bn1 = nn.BatchNorm2d(mid, momentum=bn_momentum, eps=bn_eps)
        self.se = _SE(mid, squeezed) if squeezed else None
        self.project = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn2 = _LastBN(cout, bn_momentum, bn_eps, residual)

    def forward(self, x: torch.Tensor, block: BlockSpec, cout: int, act: Callable, residual: bool) -> torch.Tensor:
        cin, k, training = x.shape[1], block.kernel, self.training
        mid = block.expanded(cin)
        y = x
        if block.conv_type is ConvType.MBCONV:
            y = act(_bn(self.bn0, conv(y, self.expand.weight[:mid, :cin]), mid, training))
        y = act(_bn(self.bn1, conv(y, crop(self.dw.weight[:mid], k), self.stride, mid), mid, training))
        if block.has_se:
            y = self.se(y, block.squeezed(cin), act)
        return _bn(self.bn2.pick(residual), conv(y, self.project.weight[:cout, :mid]), cout, training)

    def copy_to(self, dst: MBBlock, block: BlockSpec, cin: int, cout: int) -> None:
        k, mid = block.kernel, block.expanded(cin)
        if block.conv_type is ConvType.MBCONV:
            dst.expand.weight.copy_(self.expand.weight[:mid, :cin])
            _copy_bn(dst.bn0, self.bn0, mid)
        dst.dw.weight.copy_(crop(self.dw.weight[:mid], k))
        _copy_bn(dst.bn1, self.bn1, mid)
        if block.has_se:
            self.se.copy_to(dst.se, mid, block.squeezed(cin))
        dst.project.weight.copy_(self.project.weight[:cout, :mid])
        _copy_bn(dst.bn2, self.bn2.pick(dst.residual), cout)


class _Dense(nn.Module):
    """The regular conv branch: a dense ``k x k`` conv, its BN, then SE on its output."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, squeezed: int, bn_momentum: float,
                 bn_eps: float, residual: bool) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
        self.bn = _LastBN(cout, bn_momentum, bn_eps, residual)
        self.se = _SE(cout, squeezed) if squeezed else None

    def forward(self, x: torch.Tensor, block: BlockSpec, cout: int, act: Callable, residual: bool) -> torch.Tensor:
        cin = x.shape[1]
        y = act(_bn(self.bn.pick(residual), conv(x, crop(self.conv.weight[:cout, :cin], block.kernel), self.stride),
                    cout, self.training))
        return self.se(y, block.squeezed(cin), act) if block.has_se else y

    def copy_to(self, dst: MBBlock, block: BlockSpec, cin: int, cout: int) -> None:
        dst.conv.weight.copy_(crop(self.conv.weight[:cout, :cin], block.kernel))
        _copy_bn(dst.bn, self.bn.pick(dst.residual), cout)
        if block.has_se:
            self.se.copy_to(dst.se, cout, block.squeezed(cin))


class SuperLayer(nn.Module):
    """Layer ``j`` of one stage with the largest weights of every op the stage may choose: one
    branch per op family -- ``mbconv`` (every expansion ratio > 1), ``ds`` (expansion 1) and
    ``conv`` -- each holding the largest tensors its choices slice."""

    def __init__(self, choices: StageChoices, cin: int, cout: int, stride: int, bn_momentum: float,
                 bn_eps: float) -> None:
        super().__init__()
        self.stride = stride
        types = {t for _, t, _ in choices.variants()}
        k = max(choices.kernels)
        sq = _squeezed(cin, choices.se_ratios)
        residual = stride == 1  # an identity shortcut needs a shape-keeping layer
        ratios = [e for _, t, e in choices.variants() if t is ConvType.MBCONV]
        if ratios:
            self.mbconv = _Separable(cin, max(int(cin * e) for e in ratios), cout, k, stride, sq, True,
                                     bn_momentum, bn_eps, residual)
        if ConvType.DS in types:
            self.ds = _Separable(cin, cin, cout, k, stride, sq, False, bn_momentum, bn_eps, residual)
        if ConvType.CONV in types:
            self.conv = _Dense(cin, cout, k, stride, sq, bn_momentum, bn_eps, residual)

    def _branch(self, block: BlockSpec) -> nn.Module:
        return getattr(self, block.conv_type.value)

    def forward(self, x: torch.Tensor, block: BlockSpec, cout: int, act: Callable) -> torch.Tensor:
        cin = x.shape[1]
        shortcut = block.shortcut(cin, self.stride)
        y = self._branch(block)(x, block, cout, act, shortcut == "identity")
        if shortcut == "identity":
            y = y + x
        elif shortcut == "pool":
            y = y + pool_shortcut(x, self.stride, cout)
        return y

    @torch.no_grad()
    def copy_to(self, dst: MBBlock, block: BlockSpec, cin: int, cout: int) -> None:
        """Give a stand-alone layer this layer's sliced weights and BN statistics."""
        self._branch(block).copy_to(dst, block, cin, cout)


class _Pick:
    """A stand-in for an Optuna trial whose every categorical choice is ``pick(name, choices)``."""

    def __init__(self, pick: Callable[[str, list], Any]) -> None:
        self.pick = pick

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self.pick(name, list(choices))


def _extreme(space: SearchSpace, big: bool, changes: dict[str, Any] | None = None) -> ArchSpec:
    best = max if big else min
    changes = changes or {}

    def pick(name: str, choices: list) -> Any:
        if name in changes:
            return changes[name]
        what = name.rsplit("_", 1)[-1]
        if what == "op":
            return "mbconv" if "mbconv" in choices else "ds" if "ds" in choices else choices[0]
        if what == "skip":
            return "identity" if "identity" in choices else choices[0]
        if what == "activation":
            return choices[0]  # the base's
        return best(choices)

    return space.sample(_Pick(pick))


def largest_spec(space: SearchSpace, changes: dict[str, Any] | None = None) -> ArchSpec:
    """The largest subnet: mbconv with the largest expansion, kernel, SE, width and depth everywhere;
    ``changes`` (``{choice name: option}``, e.g. ``{"s3_op": "conv"}``) sets single choices."""
    return _extreme(space, True, changes)


def smallest_spec(space: SearchSpace) -> ArchSpec:
    """The smallest subnet: the smallest expansion (ds where 1 is a choice), kernel, SE, width, depth."""
    return _extreme(space, False)


def _nested_options(name: str, choices: list) -> list:
    """The options of a choice that share one branch with the largest subnet's: MBConv, the
    identity skip, expansion ratios above 1 (all options for every other choice, or where none is)."""
    what = name.rsplit("_", 1)[-1]
    keep = {"op": lambda c: c == "mbconv", "skip": lambda c: c == "identity",
            "expand": lambda c: c > 1}.get(what, lambda c: True)
    return [c for c in choices if keep(c)] or choices


def random_spec(space: SearchSpace, rng: random.Random, nested: float = 0.0) -> ArchSpec:
    """A uniformly random point of the space (each choice uniform, as a random sampler draws).
    With ``nested`` > 0 each op, skip and expansion choice is drawn, with that probability, from
    its nested options only (:func:`_nested_options`): progressive training phases the branches
    of their own in."""
    def pick(name: str, choices: list) -> Any:
        return rng.choice(_nested_options(name, choices) if nested and rng.random() < nested else choices)

    return space.sample(_Pick(pick))


def fair_specs(space: SearchSpace, rng: random.Random, m: int) -> list[ArchSpec]:
    """``m`` random points of the space that share out every choice fairly (FairNAS's strict
    fairness, Chu et al. 2021): for each choice, the ``m`` subnets take a shuffled run through its
    options (reshuffled each time they are used up), so with ``m`` >= a choice's number of options
    every option -- every op, skip, expansion, width ... of every stage -- is trained at every step,
    and with fewer no option is drawn twice before each was drawn once. Each subnet alone is a
    uniformly random point, as :func:`random_spec` draws."""
    runs: dict[str, list] = {}

    def option(name: str, choices: list, i: int) -> Any:
        run = runs.setdefault(name, [])
        while len(run) <= i:
            more = list(choices)
            rng.shuffle(more)
            run.extend(more)
        return run[i]

    return [space.sample(_Pick(lambda name, choices, i=i: option(name, choices, i))) for i in range(m)]


@dataclass(frozen=True)
class _Layer:
    stage: int
    index: int
    block: BlockSpec
    cin: int
    cout: int


class SuperNet(nn.Module):
    """Every network of ``space`` in one module; ``forward(x, spec)`` runs the subnet ``spec``."""

    def __init__(self, space: SearchSpace, bn_momentum: float = 0.1, bn_eps: float = 1e-3) -> None:
        super().__init__()
        base = space.base
        self.space, self.bn_momentum, self.bn_eps = space, bn_momentum, bn_eps
        stem, head = max(space.stems), max(space.heads)
        self.stem = nn.Conv2d(base.in_channels, stem, 3, 2, 1, bias=False)
        self.stem_bn = nn.BatchNorm2d(stem, momentum=bn_momentum, eps=bn_eps)
        stages, previous = [], stem
        for st in space.stages:
            cout = max(st.widths)
            depth = st.base.repeats + max(st.layer_deltas)
            stages.append(nn.ModuleList(
                SuperLayer(st, previous if j == 0 else cout, cout, st.base.stride if j == 0 else 1,
                           bn_momentum, bn_eps) for j in range(depth)))
            previous = cout
        self.stages = nn.ModuleList(stages)
        self.head = nn.Conv2d(previous, head, 1, bias=False)
        self.head_bn = nn.BatchNorm2d(head, momentum=bn_momentum, eps=bn_eps)
        self.classifier = nn.Linear(head, base.num_classes)
        self.history: list[dict] = []  # per-epoch training record (loss, seconds), kept with the weights

    def check(self, spec: ArchSpec) -> None:
        """Raise ``ValueError`` (one line) unless ``spec`` is a point of the supernet's space."""
        self.space.params_of(spec)
        base = self.space.base
        if (spec.num_classes, spec.in_channels) != (base.num_classes, base.in_channels):
            raise ValueError(f"spec has {spec.num_classes} classes / {spec.in_channels} channels, the "
                             f"supernet {base.num_classes} / {base.in_channels}")

    def _layers(self, spec: ArchSpec) -> list[_Layer]:
        return [_Layer(i, j, stage, cin, cout) for i, stage in enumerate(spec.stages)
                for j, (cin, cout, _) in enumerate(stage.layers())]

    def forward(self, x: torch.Tensor, spec: ArchSpec, *, check: bool = True,
                features: bool = False) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """The logits of subnet ``spec``; with ``features`` also the stem's output and every
        stage's output, in order (what :meth:`stage` maps from one to the next)."""
        if check:
            self.check(spec)
        act = _ACT[spec.activation.value]
        training = self.training
        x = act(_bn(self.stem_bn, conv(x, self.stem.weight[:spec.stem], 2), spec.stem, training))
        feats = [x]
        for i in range(len(spec.stages)):
            x = self.stage(x, spec, i, act)
            feats.append(x)
        x = act(_bn(self.head_bn, conv(x, self.head.weight[:spec.head, :x.shape[1]]), spec.head, training))
        x = F.dropout(x.mean((2, 3)), self.space.base.dropout, training)
        logits = F.linear(x, self.classifier.weight[:, :spec.head], self.classifier.bias)
        return (logits, feats) if features else logits

    def stage(self, x: torch.Tensor, spec: ArchSpec, i: int, act: Callable | None = None) -> torch.Tensor:
        """Stage ``i`` of subnet ``spec`` on ``x`` (the stage's input channels)."""
        act = act or _ACT[spec.activation.value]
        for j, (_, cout, _) in enumerate(spec.stages[i].layers()):
            x = self.stages[i][j](x, spec.stages[i], cout, act)
        return x

    @torch.no_grad()
    def subnet(self, spec: ArchSpec, bn_momentum: float | None = None) -> EffNet:
        """The stand-alone network ``build_model(spec)`` with this supernet's sliced weights and BN
        statistics: its eval-mode forward equals ``self.eval()(x, spec)``."""
        self.check(spec)
        model = build_model(spec, bn_momentum=self.bn_momentum if bn_momentum is None else bn_momentum,
                            bn_eps=self.bn_eps)
        model.stem.conv.weight.copy_(self.stem.weight[:spec.stem])
        _copy_bn(model.stem.bn, self.stem_bn, spec.stem)
        for layer, block in zip(self._layers(spec), model.blocks):
            self.stages[layer.stage][layer.index].copy_to(block, layer.block, layer.cin, layer.cout)
        model.head.conv.weight.copy_(self.head.weight[:spec.head, :spec.last_filters])
        _copy_bn(model.head.bn, self.head_bn, spec.head)
        model.classifier.weight.copy_(self.classifier.weight[:, :spec.head])
        model.classifier.bias.copy_(self.classifier.bias)
        return model
