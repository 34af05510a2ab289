"""Compound-scaling rules against the official rounding (efficientnet-pytorch's own functions)."""

from __future__ import annotations

import math
import random

import pytest
from efficientnet_pytorch import utils as ep_utils

from search_space import (ArchSpec, count_flops, reference_names,
                          reference_spec, round_filters, round_repeats, scale_resolution,
                          scale_spec)
from search_space.references import EFFICIENTNET_PARAMS

# name -> (width, depth, resolution, dropout), as efficientnet-pytorch publishes it (REFERENCE.md has
# the same table): the oracle the code's own table is checked against
PUBLISHED = {f"efficientnet-b{i}": ep_utils.efficientnet_params(f"efficientnet-b{i}") for i in range(8)}


def _global_params(width=None, depth=None, min_depth=None, divisor=8):
    return ep_utils.GlobalParams(width_coefficient=width, depth_coefficient=depth, image_size=224,
                                 dropout_rate=0.2, num_classes=1000, batch_norm_momentum=0.99,
                                 batch_norm_epsilon=1e-3, drop_connect_rate=0.2,
                                 depth_divisor=divisor, min_depth=min_depth, include_top=True)


@pytest.mark.parametrize("filters,width,expected", [
    (16, 1.2, 24),    # 19.2 -> 16, but 16 < 0.9 * 19.2 = 17.28 -> +8 (the 10% rule)
    (32, 1.1, 32),    # 35.2 -> 32, 32 >= 31.68 -> 32
    (1280, 1.1, 1408),
    (1280, 2.0, 2560),
    (320, 1.8, 576),
    (40, 1.4, 56),
    (16, 0.75, 16),   # 12 -> 16: rounds up
    (24, 0.75, 24),   # 18 -> 16 < 16.2 -> 24
    (112, 1.1, 120),  # 123.2 -> 120
    (1, 1.0, 8),      # the min-8 floor
    (3, 0.5, 8),
    (4, 1.0, 8),
    (12, 1.0, 16),    # width 1.0 still rounds non-multiples of 8
])
def test_round_filters_edge_cases(filters, width, expected):
    assert round_filters(filters, width) == expected
    assert type(round_filters(filters, width)) is int


def test_round_filters_min_depth_and_divisor():
    assert round_filters(8, 1.0, min_depth=16) == 16
    assert round_filters(30, 1.0, divisor=4) == 32
    assert round_filters(1, 1.0, divisor=4) == 4


def test_round_filters_matches_efficientnet_pytorch_brute_force():
    rng = random.Random(0)
    widths = sorted({0.1, 0.25, 0.35, 0.5, 0.75, 0.9, 1.0, 1.1, 1.2, 1.21, 1.331, 1.4, 1.6, 1.8,
                     2.0, 2.2, 3.1, 4.3, *[round(rng.uniform(0.05, 4.0), 4) for _ in range(40)]})
    filters = [*range(1, 200), *range(200, 2600, 7), 1280, 1536, 2048]
    checked = 0
    for width in widths:
        params = _global_params(width)
        params16 = _global_params(width, min_depth=16)
        for f in filters:
            assert round_filters(f, width) == ep_utils.round_filters(f, params), (f, width)
            assert round_filters(f, width, min_depth=16) == ep_utils.round_filters(f, params16)
            checked += 1
    assert checked > 10_000


def test_round_repeats_is_ceil_and_matches_efficientnet_pytorch():
    assert round_repeats(1, 1.1) == 2
    assert round_repeats(4, 3.1) == 13
    assert round_repeats(3, 1.0) == 3
    assert round_repeats(2, 0.5) == 1
    for depth in (0.3, 0.5, 1.0, 1.1, 1.2, 1.4, 1.44, 1.8, 2.2, 2.6, 3.1, 4.0):
        params = _global_params(depth=depth)
        for r in range(1, 20):
            assert round_repeats(r, depth) == math.ceil(depth * r)
            assert round_repeats(r, depth) == ep_utils.round_repeats(r, params)


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf])
def test_multipliers_must_be_positive_finite(bad):
    with pytest.raises(ValueError, match="width"):
        round_filters(32, bad)
    with pytest.raises(ValueError, match="depth"):
        round_repeats(3, bad)
    with pytest.raises(ValueError, match="resolution"):
        scale_resolution(224, bad)


def test_scale_resolution():
    assert scale_resolution(224, 1.15, 1) == 258
    assert scale_resolution(224, 1.15) == 258
    assert scale_resolution(224, 1.15, 0) == 224
    assert scale_resolution(224, 1.15, 2) == round(224 * 1.15 ** 2) == 296
    assert type(scale_resolution(224, 1.15, 1.5)) is int


def test_scale_spec_is_pure():
    base = reference_spec("efficientnet-b0")
    before = base.to_string()
    scaled = scale_spec(base, 1.4, 1.8, resolution=380, dropout=0.4)
    assert scaled is not base and scaled != base
    assert base.to_string() == before and base == reference_spec("efficientnet-b0")
    same = scale_spec(base, 1.0, 1.0)
    assert same == base and same is not base


def test_the_code_s_table_is_the_published_one():
    assert EFFICIENTNET_PARAMS == PUBLISHED


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_scale_spec_of_b0_is_the_published_member(name):
    width, depth, res, dropout = PUBLISHED[name]
    b0 = reference_spec("efficientnet-b0")
    assert scale_spec(b0, width, depth, resolution=res, dropout=dropout) == reference_spec(name)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_scaled_layers_match_efficientnet_pytorch(name, official_model):
    """Every layer (kernel, stride, expansion, in, out, SE, skip) of scale_spec(B0, w, d) equals
    the block efficientnet-pytorch builds with its own rounding; stem, head and dropout too."""
    width, depth, res, dropout = PUBLISHED[name]
    spec = scale_spec(reference_spec("efficientnet-b0"), width, depth, resolution=res,
                      dropout=dropout)
    ours = [(st.kernel, stride, st.expand_ratio, cin, cout, st.se_ratio, st.id_skip)
            for st in spec.stages for cin, cout, stride in st.layers()]
    model = official_model(name)
    theirs = []
    for block in model._blocks:
        a = block._block_args
        stride = a.stride[0] if isinstance(a.stride, (list, tuple)) else a.stride
        theirs.append((a.kernel_size, stride, a.expand_ratio, a.input_filters, a.output_filters,
                       a.se_ratio, a.id_skip))
    assert ours == theirs
    assert spec.stem == model._conv_stem.out_channels
    assert spec.head == model._conv_head.out_channels
    assert spec.dropout == model._global_params.dropout_rate
    assert spec.resolution == model._global_params.image_size


def test_scale_spec_keeps_everything_but_widths_and_depths():
    for name in reference_names():
        base = reference_spec(name, num_classes=10, in_channels=1)
        scaled = scale_spec(base, 1.3, 1.7)
        assert (scaled.num_classes, scaled.in_channels, scaled.resolution, scaled.dropout,
                scaled.drop_connect, scaled.activation) == (
            base.num_classes, base.in_channels, base.resolution, base.dropout, base.drop_connect,
            base.activation)
        for a, b in zip(base.stages, scaled.stages):
            assert (a.kernel, a.stride, a.expand_ratio, a.se_ratio, a.id_skip, a.conv_type) == (
                b.kernel, b.stride, b.expand_ratio, b.se_ratio, b.id_skip, b.conv_type)
            assert b.repeats == math.ceil(1.7 * a.repeats)
            assert b.out_filters == round_filters(a.out_filters, 1.3)
        assert scaled.stem == round_filters(base.stem, 1.3)
        assert scaled.head == round_filters(base.head, 1.3)
        assert isinstance(scaled, ArchSpec)


def test_formula_scaling_costs_more_than_two_x():
    """phi = 1 straight from the formula: ceil(1.2 * 1) = 2 doubles every one-layer stage, so
    the multiply-adds grow more than alpha * beta^2 * gamma^2 = 1.92 says."""
    b0 = reference_spec("efficientnet-b0")
    d, w, g = 1.2, 1.1, 1.15  # phi = 1
    scaled = scale_spec(b0, w, d, resolution=scale_resolution(224, g))
    assert scaled.resolution == 258
    assert [s.repeats for s in scaled.stages] == [2, 3, 3, 4, 4, 5, 2]
    ratio = count_flops(scaled) / count_flops(b0)
    assert 2.4 < ratio < 2.7  # REFERENCE.md: "about 2.5x B0's multiply-adds, not 2x"
