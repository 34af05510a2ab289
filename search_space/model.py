"""Spec -> ``torch.nn.Module``. The only module of ``search_space`` that imports torch.

Layer names match :func:`search_space.costs.cost_breakdown` so that per-layer costs can be
compared with what fvcore or a profiler sees. Padding is symmetric ``k // 2`` (the output size is
``ceil(size / stride)``, as with TF "same" padding), so any input resolution >= 32 works.

BN momentum: the official TF value 0.99 is PyTorch ``momentum=0.01``; with it the running
statistics do not converge in a short proxy run and validation accuracy collapses to chance.
The default here is PyTorch's 0.1; pass 0.01 for full-length training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .spec import Activation, ArchSpec, BlockSpec, ConvType

__all__ = ["build_model", "EffNet", "MBBlock", "count_flops_fvcore", "fold_batchnorm", "pool_shortcut"]

_ACTIVATIONS = {Activation.SILU: nn.SiLU, Activation.RELU: nn.ReLU, Activation.RELU6: nn.ReLU6}


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeezed: int, act: type[nn.Module]) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeezed, 1, bias=True)
        self.act = act(inplace=True)
        self.expand = nn.Conv2d(squeezed, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = spatial_conv(self.expand, self.act(spatial_conv(self.reduce, s, self.training)), self.training)
        return x * torch.sigmoid(s)


def _used_taps(size: int, kernel: int, stride: int, pad: int) -> tuple[int, int]:
    """Range ``[lo, hi)`` of kernel taps along one axis that ever touch real input (not padding)."""
    out = (size + 2 * pad - kernel) // stride + 1
    lo = max(0, pad - (out - 1) * stride)
    hi = min(kernel, pad + size)
    return lo, hi


def spatial_conv(conv: nn.Conv2d, x: torch.Tensor, fast: bool) -> torch.Tensor:
    """``conv(x)`` computed the fast way on small feature maps; same outputs and gradients.

    With symmetric ``k // 2`` padding, kernel taps that only ever multiply padding zeros can be
    dropped: at stride 1 only the central ``2H - 1`` rows of the kernel touch an ``H``-row input;
    at stride 2 a 2x2 map feeding a 1x1 output uses just a 2x2 window of a 3x3 or 5x5 kernel. On the
    1x1 and 2x2 maps of small proxy resolutions the nominal convolution is then up to 25x the
    needed work, and oneDNN's depthwise backward on those shapes was the largest cost of a
    training step. A convolution that is left with a 1x1 kernel on a 1x1 map is a plain matrix
    product (``groups=1``: pointwise convs, squeeze-excite, the head) or a per-channel scale
    (depthwise) and is computed as one: BLAS and elementwise kernels are 2-3x faster than oneDNN's
    convolution backward on those shapes (``bench/trainer.py``). The dropped taps get a zero gradient
    either way, so training is unchanged. ``fast`` is off in eval mode so that operator counters
    (fvcore) see the architecture's nominal convolution.
    """
    if not fast:
        return conv(x)
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    h, w = x.shape[-2:]
    top, bottom = _used_taps(h, kh, sh, ph)
    left, right = _used_taps(w, kw, sw, pw)
    ch, cw = bottom - top, right - left
    new_ph, new_pw = ph - top, pw - left
    # the cropped conv must pad symmetrically and give the same output size, else keep the nominal one
    out_h, out_w = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    if (new_ph < 0 or new_pw < 0 or (h + 2 * new_ph - ch) // sh + 1 != out_h
            or (w + 2 * new_pw - cw) // sw + 1 != out_w or conv.dilation != (1, 1)):
        return conv(x)
    weight = conv.weight
    if (ch, cw) != (kh, kw):
        weight = weight[:, :, top:bottom, left:right]
    if h == w == 1 and ch == cw == 1 and out_h == out_w == 1:  # (cropped) 1x1 kernel, 1x1 map in and out
        n = x.shape[0]
        if conv.groups == 1:
            y = F.linear(x.reshape(n, -1), weight.reshape(weight.shape[0], -1), conv.bias)
            return y.view(n, -1, 1, 1)
        if conv.groups == conv.in_channels == conv.out_channels:
            y = x * weight.reshape(1, -1, 1, 1)
            return y if conv.bias is None else y + conv.bias.view(1, -1, 1, 1)
    if (ch, cw) == (kh, kw):
        return conv(x)
    return F.conv2d(x, weight, conv.bias, conv.stride, (new_ph, new_pw), 1, conv.groups)


def _drop_connect(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the whole residual branch per sample."""
    if not training or rate == 0.0:
        return x
    keep = 1.0 - rate
    mask = torch.empty((x.shape[0], 1, 1, 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x * mask / keep


def pool_shortcut(x: torch.Tensor, stride: int, out_channels: int) -> torch.Tensor:
    """MnasNet's pooling skip op on a layer that changes the shape (see ``BlockSpec``): average
    pool 3x3, stride 2, padding 1 not counted (ceil(H / 2), like the layer's own strided conv; no
    pooling at stride 1), then the first ``min(in, out)`` channels, zero-padded to ``out``. No
    weights; fvcore counts neither the pooling nor the padding as conv or linear work."""
    if stride != 1:
        x = F.avg_pool2d(x, 3, stride, 1, count_include_pad=False)
    cin = x.shape[1]
    if out_channels < cin:
        return x[:, :out_channels]
    if out_channels > cin:
        return F.pad(x, (0, 0, 0, 0, 0, out_channels - cin))
    return x


class MBBlock(nn.Module):
    """One layer of a stage: MBConv, depthwise-separable or regular conv (see ``ConvType``).

    ``residual``: the identity shortcut; ``pool_shortcut``: the pooling skip op's shortcut of a
    layer that changes the shape (on a shape-keeping layer ``pool`` builds the identity residual)."""

    def __init__(self, stage: BlockSpec, cin: int, cout: int, stride: int, act: type[nn.Module],
                 bn_momentum: float, bn_eps: float, drop_connect: float) -> None:
        super().__init__()
        k, mid = stage.kernel, stage.expanded(cin)
        self.conv_type = stage.conv_type
        shortcut = stage.shortcut(cin, stride)
        self.residual = shortcut == "identity"
        self.pool_shortcut = shortcut == "pool"
        self.stride, self.out_channels = stride, cout
        self.drop_connect = drop_connect

        def bn(c: int) -> nn.BatchNorm2d:
            return nn.BatchNorm2d(c, momentum=bn_momentum, eps=bn_eps)

        if stage.conv_type is ConvType.CONV:
            self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
            self.bn = bn(cout)
        else:
            if stage.conv_type is ConvType.MBCONV:
                self.expand = nn.Conv2d(cin, mid, 1, bias=False)
                self.bn0 = bn(mid)
            self.dw = nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False)
            self.bn1 = bn(mid)
        self.act = act(inplace=True)
        self.se = SqueezeExcite(mid, stage.squeezed(cin), act) if stage.has_se else None
        if stage.conv_type is not ConvType.CONV:
            self.project = nn.Conv2d(mid, cout, 1, bias=False)
            self.bn2 = bn(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.conv_type is ConvType.CONV:
            y = self.act(self.bn(spatial_conv(self.conv, y, self.training)))
        else:
            if self.conv_type is ConvType.MBCONV:
                y = self.act(self.bn0(spatial_conv(self.expand, y, self.training)))
            y = self.act(self.bn1(spatial_conv(self.dw, y, self.training)))
        if self.se is not None:
            y = self.se(y)
        if self.conv_type is not ConvType.CONV:
            y = self.bn2(spatial_conv(self.project, y, self.training))
        if self.residual:
            y = _drop_connect(y, self.drop_connect, self.training) + x
        elif self.pool_shortcut:
            y = _drop_connect(y, self.drop_connect, self.training) + pool_shortcut(x, self.stride, self.out_channels)
        return y


class _ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, stride: int, act: type[nn.Module],
                 bn_momentum: float, bn_eps: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout, momentum=bn_momentum, eps=bn_eps)
        self.act = act(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(spatial_conv(self.conv, x, self.training)))


class EffNet(nn.Module):
    """The network a spec describes: stem, blocks, head, pooling, dropout, classifier."""

    def __init__(self, spec: ArchSpec, bn_momentum: float = 0.1, bn_eps: float = 1e-3) -> None:
        super().__init__()
        if (isinstance(bn_momentum, bool) or not isinstance(bn_momentum, (int, float))
                or not 0.0 < bn_momentum <= 1.0):
            raise ValueError(f"bn_momentum must be in (0, 1] (PyTorch convention), got {bn_momentum!r}")
        self.spec = spec
        act = _ACTIVATIONS[spec.activation]
        self.stem = _ConvBNAct(spec.in_channels, spec.stem, 3, 2, act, bn_momentum, bn_eps)
        blocks: list[nn.Module] = []
        total = spec.num_blocks
        for stage in spec.stages:
            for cin, cout, stride in stage.layers():
                rate = spec.drop_connect * len(blocks) / total
                blocks.append(MBBlock(stage, cin, cout, stride, act, bn_momentum, bn_eps, rate))
        self.blocks = nn.Sequential(*blocks)
        self.head = _ConvBNAct(spec.last_filters, spec.head, 1, 1, act, bn_momentum, bn_eps)
        self.dropout = nn.Dropout(spec.dropout)
        self.classifier = nn.Linear(spec.head, spec.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # PyTorch's default initialisers (as efficientnet-pytorch): measured on Fashion-MNIST they
        # reach 64-70% minival accuracy after one short epoch where the official fan-out normal
        # init reached 38-58%. Zero-init of the last BN of each residual branch makes every
        # block start as identity, which helps the deep scaled members train stably. Pooling
        # shortcuts of shape-changing layers are not: zero-init would start such a block with zero
        # in every channel the (zero-padded) shortcut does not carry.
        for block in self.blocks:
            if isinstance(block, MBBlock) and block.residual:
                last = block.bn if block.conv_type is ConvType.CONV else block.bn2
                nn.init.zeros_(last.weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).mean((2, 3))
        return self.classifier(self.dropout(x))


def build_model(spec: ArchSpec, bn_momentum: float = 0.1, bn_eps: float = 1e-3) -> EffNet:
    """Build the network of ``spec``. ``bn_momentum`` uses the PyTorch convention (see module doc)."""
    if not isinstance(spec, ArchSpec):
        raise ValueError(f"build_model needs an ArchSpec, got {type(spec).__name__}")
    return EffNet(spec, bn_momentum=bn_momentum, bn_eps=bn_eps)


@torch.no_grad()
def fold_batchnorm(model: EffNet) -> EffNet:
    """``model`` for inference only, in place: every BatchNorm folded into the convolution before it
    (``w * gamma / sqrt(var + eps)``, bias ``beta - mean * gamma / sqrt(var + eps)``) and replaced by
    ``nn.Identity``. Same outputs as ``model.eval()`` up to float rounding (about 1e-6), one pass
    over each activation fewer: on one quiet CPU thread evaluating a network of the MBConv space is
    1.1-1.7x faster, a median 1.26x over nine networks (``bench/evaluation.py``; BN in eval mode is a
    separate memory-bound kernel after every conv). A model in training mode is refused: its BN
    normalises with batch statistics, which cannot be folded. The weights change without autograd
    (callable with or without ``torch.no_grad()``); the folded model is for inference only. The
    FLOPs and fvcore counts stay those of the unfolded network (``count_flops_fvcore`` builds its
    own)."""
    if not isinstance(model, EffNet):
        raise ValueError(f"fold_batchnorm needs an EffNet, got {type(model).__name__}")
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (call .eval() first): "
                         "in training mode BN uses batch statistics")
    pairs = [(model.stem, "conv", "bn"), (model.head, "conv", "bn")]
    for block in model.blocks:
        if block.conv_type is ConvType.CONV:
            pairs.append((block, "conv", "bn"))
        else:
            if block.conv_type is ConvType.MBCONV:
                pairs.append((block, "expand", "bn0"))
            pairs += [(block, "dw", "bn1"), (block, "project", "bn2")]
    for owner, conv_name, bn_name in pairs:
        conv, bn = getattr(owner, conv_name), getattr(owner, bn_name)
        if not isinstance(bn, nn.BatchNorm2d):  # folded already
            continue
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = bn.bias - bn.running_mean * scale
        if conv.bias is not None:
            bias = bias + conv.bias * scale
        conv.weight.mul_(scale.view(-1, 1, 1, 1))
        conv.bias = nn.Parameter(bias, requires_grad=False)
        setattr(owner, bn_name, nn.Identity())
    return model


def count_flops_fvcore(spec: ArchSpec, resolution: int | None = None, by_operator: bool = False):
    """Multiply-adds of conv + linear layers of the built model as fvcore counts them.

    Slow (it traces the model, about a second for B0); use :func:`search_space.count_flops` to
    price candidates and this to cross-check. ``by_operator=True`` returns fvcore's full
    per-operator dict instead."""
    from fvcore.nn import FlopCountAnalysis

    res = spec.resolution if resolution is None else resolution
    model = build_model(spec).eval()
    x = torch.zeros(1, spec.in_channels, res, res)
    analysis = FlopCountAnalysis(model, x)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    ops = dict(analysis.by_operator())
    if by_operator:
        return ops
    return int(ops.get("conv", 0) + ops.get("linear", 0) + ops.get("addmm", 0))
