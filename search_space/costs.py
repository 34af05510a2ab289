"""Parameters and FLOPs of a spec by closed-form formulas -- no model is built.

FLOPs convention (the paper's): **multiply-adds of convolution and fully-connected layers**.
One multiply-add counts as one FLOP; batch norm, activations, pooling, the SE gate multiply and
the residual add are not counted, and neither are biases. MnasNet's pooling skip op
(``BlockSpec.pool_skip``) is therefore free: its shortcut is an average pool plus a channel
zero-pad or crop, with no weights (0 parameters) and no conv or linear work (0 FLOPs); fvcore has
no handler for ``avg_pool2d``, ``constant_pad_nd`` or slicing, so its count agrees (had the op used
``adaptive_avg_pool2d``, fvcore would report it, but under its own key, not ``conv``). This is exactly what fvcore reports for
its ``conv`` and ``linear`` operators, which the tests check layer type by layer type. Parameter
counts include every trainable tensor (conv and linear weights, biases, BN affine weights) and
match ``sum(p.numel() for p in model.parameters())`` of :func:`search_space.model.build_model`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .spec import ArchSpec, ConvType

__all__ = ["LayerCost", "cost_breakdown", "count_params", "count_flops", "conv_output_size"]


@dataclass(frozen=True)
class LayerCost:
    """One counted operator: its name in the built model, kind, params and multiply-adds."""

    name: str
    kind: str  # "conv" | "linear" | "bn"
    params: int
    flops: int


def conv_output_size(size: int, kernel: int, stride: int) -> int:
    """Spatial size after a conv with symmetric ``k // 2`` padding (= ceil(size / stride))."""
    pad = kernel // 2
    return (size + 2 * pad - kernel) // stride + 1


def _conv(name: str, cin: int, cout: int, k: int, hw: int, groups: int = 1, bias: bool = False) -> LayerCost:
    weights = cout * (cin // groups) * k * k
    return LayerCost(name, "conv", weights + (cout if bias else 0), weights * hw * hw)


def _bn(name: str, c: int) -> LayerCost:
    return LayerCost(name, "bn", 2 * c, 0)


def cost_breakdown(spec: ArchSpec, resolution: int | None = None) -> list[LayerCost]:
    """Every counted layer of the network, in order, named as in the built model (a pooling
    shortcut has no entry: it has no weights and no multiply-adds)."""
    res = _check_resolution(spec.resolution if resolution is None else resolution)
    out: list[LayerCost] = []
    hw = conv_output_size(res, 3, 2)
    out += [_conv("stem.conv", spec.in_channels, spec.stem, 3, hw), _bn("stem.bn", spec.stem)]
    index = 0
    for stage in spec.stages:
        for cin, cout, stride in stage.layers():
            p = f"blocks.{index}"
            mid = stage.expanded(cin)
            hw_out = conv_output_size(hw, stage.kernel, stride)
            if stage.conv_type is ConvType.CONV:
                out += [_conv(f"{p}.conv", cin, cout, stage.kernel, hw_out), _bn(f"{p}.bn", cout)]
            else:
                if stage.conv_type is ConvType.MBCONV:
                    out += [_conv(f"{p}.expand", cin, mid, 1, hw), _bn(f"{p}.bn0", mid)]
                out += [_conv(f"{p}.dw", mid, mid, stage.kernel, hw_out, groups=mid),
                        _bn(f"{p}.bn1", mid)]
            if stage.has_se:
                sq = stage.squeezed(cin)
                out += [_conv(f"{p}.se.reduce", mid, sq, 1, 1, bias=True),
                        _conv(f"{p}.se.expand", sq, mid, 1, 1, bias=True)]
            if stage.conv_type is not ConvType.CONV:
                out += [_conv(f"{p}.project", mid, cout, 1, hw_out), _bn(f"{p}.bn2", cout)]
            hw = hw_out
            index += 1
    out += [_conv("head.conv", spec.last_filters, spec.head, 1, hw), _bn("head.bn", spec.head)]
    out.append(LayerCost("classifier", "linear", spec.head * spec.num_classes + spec.num_classes,
                         spec.head * spec.num_classes))
    return out


def _check_resolution(res: object) -> int:
    if isinstance(res, bool) or not isinstance(res, int) or res < 1:
        raise ValueError(f"resolution must be a positive integer, got {res!r}")
    return res


def _totals(spec: ArchSpec, res: int) -> tuple[int, int]:
    """``(params, flops)`` summed without building :class:`LayerCost` objects: the hot path of
    a search. Same formulas as :func:`cost_breakdown` (the tests hold them equal), using that the
    ``repeats - 1`` layers after a stage's first are identical (stride 1, in == out, same size)."""
    hw = (res - 1) // 2 + 1  # stem: 3x3, stride 2
    params = spec.in_channels * spec.stem * 9 + 2 * spec.stem
    flops = spec.in_channels * spec.stem * 9 * hw * hw
    for stage in spec.stages:
        k2 = stage.kernel * stage.kernel
        conv_type = stage.conv_type
        se_ratio = stage.se_ratio
        cout = stage.out_filters
        first = True
        for cin, stride in ((stage.in_filters, stage.stride), (cout, 1)):
            if first:
                n = 1
            else:
                n = stage.repeats - 1
                if n == 0:
                    break
            hw_out = (hw - 1) // stride + 1  # symmetric k // 2 padding: ceil(hw / stride)
            area_out = hw_out * hw_out
            if conv_type is ConvType.CONV:
                mid = cout
                p = cin * cout * k2 + 2 * cout
                f = cin * cout * k2 * area_out
            else:
                if conv_type is ConvType.MBCONV:
                    mid = int(cin * stage.expand_ratio)  # = BlockSpec.expanded
                    p = cin * mid + 2 * mid
                    f = cin * mid * hw * hw
                else:
                    mid, p, f = cin, 0, 0
                p += mid * k2 + 2 * mid + mid * cout + 2 * cout
                f += (mid * k2 + mid * cout) * area_out
            if se_ratio > 0:
                sq = max(1, int(cin * se_ratio))  # = BlockSpec.squeezed
                p += 2 * mid * sq + sq + mid
                f += 2 * mid * sq
            params += n * p
            flops += n * f
            hw = hw_out
            first = False
    params += spec.last_filters * spec.head + 2 * spec.head + (spec.head + 1) * spec.num_classes
    flops += spec.last_filters * spec.head * hw * hw + spec.head * spec.num_classes
    return params, flops


def count_params(spec: ArchSpec) -> int:
    """Trainable parameters (independent of resolution)."""
    return _totals(spec, 32)[0]


def count_flops(spec: ArchSpec, resolution: int | None = None) -> int:
    """Multiply-adds of all conv and linear layers at ``resolution`` (default: the spec's).

    One multiply-add = one FLOP, the paper's and fvcore's convention (EfficientNet-B0 at 224 px:
    about 0.39B)."""
    res = spec.resolution if resolution is None else resolution
    return _totals(spec, _check_resolution(res))[1]
