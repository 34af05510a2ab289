"""Closed-form params/FLOPs against the built model, fvcore and efficientnet-pytorch."""

from __future__ import annotations

import math

import pytest
import torch
from fvcore.nn import FlopCountAnalysis
from torch import nn

from search_space import (ArchSpec, build_model, cost_breakdown, count_flops, count_flops_fvcore,
                          count_params, default_space, reference_names, reference_spec)
from search_space.costs import conv_output_size


def _fvcore(model: nn.Module, in_channels: int, res: int) -> FlopCountAnalysis:
    analysis = FlopCountAnalysis(model.eval(), torch.zeros(1, in_channels, res, res))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    return analysis


def _counted_modules(model: nn.Module) -> list[tuple[str, str, int]]:
    kinds = {nn.Conv2d: "conv", nn.BatchNorm2d: "bn", nn.Linear: "linear"}
    return [(name, kinds[type(m)], sum(p.numel() for p in m.parameters()))
            for name, m in model.named_modules() if type(m) in kinds]


def _assert_per_layer(spec: ArchSpec, res: int) -> None:
    """Total and every conv/linear layer against fvcore's per-module, per-operator counts."""
    by_module = _fvcore(build_model(spec), spec.in_channels, res).by_module_and_operator()
    breakdown = cost_breakdown(spec, res)
    counted = [c for c in breakdown if c.kind in ("conv", "linear")]
    for cost in counted:
        assert dict(by_module[cost.name]) == {cost.kind: cost.flops}, cost
    total = by_module[""]
    assert total["conv"] + total["linear"] == count_flops(spec, res)
    assert total["conv"] == sum(c.flops for c in counted if c.kind == "conv")
    assert total["linear"] == sum(c.flops for c in counted if c.kind == "linear")


def test_conv_output_size_is_ceil():
    for size in range(1, 130):
        for k in (1, 3, 5, 7):
            for s in (1, 2):
                assert conv_output_size(size, k, s) == math.ceil(size / s), (size, k, s)


def test_hand_computed_tiny_network():
    spec = ArchSpec.from_string("stem=8 r1_k3_s11_e1_i8_o8 head=16 classes=2 channels=1 res=32")
    # stem 3x3 1->8 at 16x16, dw 3x3 8 at 16x16, project 8->8, head 8->16, linear 16->2
    assert count_flops(spec) == 72 * 256 + 72 * 256 + 64 * 256 + 128 * 256 + 32 == 86_048
    assert count_params(spec) == 72 + 16 + 72 + 16 + 64 + 16 + 128 + 32 + 34 == 450
    assert sum(p.numel() for p in build_model(spec).parameters()) == 450
    assert count_flops_fvcore(spec) == 86_048


def test_breakdown_sums_and_defaults():
    spec = reference_spec("efficientnet-b0")
    layers = cost_breakdown(spec)
    assert {c.kind for c in layers} == {"conv", "bn", "linear"}
    assert all(c.flops == 0 for c in layers if c.kind == "bn")
    assert count_flops(spec) == sum(c.flops for c in layers) == count_flops(spec, 224)
    assert count_params(spec) == sum(c.params for c in layers)
    assert count_flops(spec, 64) != count_flops(spec)
    assert count_params(spec) == sum(c.params for c in cost_breakdown(spec, 517))
    assert layers[-1].name == "classifier" and layers[-1].flops == 1280 * 1000
    assert count_flops(spec.replace(resolution=64)) == count_flops(spec, 64)


def test_fast_totals_equal_breakdown(random_trial, random_arch):
    """count_flops/count_params take a summing fast path; it must equal the per-layer breakdown."""
    specs = [reference_spec(n, num_classes=1 + i, in_channels=1 + i % 3)
             for i, n in enumerate(reference_names())]
    specs += [default_space().sample(random_trial(seed)) for seed in range(100)]
    specs += [random_arch(seed) for seed in range(200)]
    for i, spec in enumerate(specs):
        assert count_params(spec) == sum(c.params for c in cost_breakdown(spec))
        assert count_flops(spec) == sum(c.flops for c in cost_breakdown(spec))
        for res in (1, 2, 3, 31 + i % 7, 64 + i, 225, 301):
            assert count_flops(spec, res) == sum(c.flops for c in cost_breakdown(spec, res)), (
                res, spec.to_string())


@pytest.mark.parametrize("bad", [0, -224, 1.5, 224.0, True, "224", None])
def test_bad_resolution(bad):
    spec = reference_spec("efficientnet-b0")
    if bad is None:  # None means "the spec's own"
        assert count_flops(spec, None) == count_flops(spec)
        return
    with pytest.raises(ValueError, match="resolution"):
        count_flops(spec, bad)


def test_layer_names_and_params_match_built_model(our_model, random_trial, random_arch):
    """costs.py's names are model.py's module names: same layers, same order, same params."""
    specs = [(name, None) for name in reference_names()]
    specs += [(None, default_space().sample(random_trial(seed)).replace(
        num_classes=3 + seed, in_channels=1 + seed % 4)) for seed in range(20)]
    specs += [(None, random_arch(seed)) for seed in range(30)]
    for name, spec in specs:
        model = our_model(name) if name else build_model(spec)
        spec = reference_spec(name) if name else spec
        ours = [(c.name, c.kind, c.params) for c in cost_breakdown(spec, 32)]
        assert ours == _counted_modules(model), spec.to_string()
        assert count_params(spec) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", reference_names())
def test_references_match_fvcore_at_64(name):
    spec = reference_spec(name)
    assert count_flops(spec, 64) == count_flops_fvcore(spec, 64)


@pytest.mark.parametrize("name,res", [("efficientnet-b0", 224), ("efficientnet-b1", 240),
                                      ("mnasnet-a1", 224), ("mobilenetv2", 40)])
def test_references_match_fvcore_at_own_resolution(name, res):
    spec = reference_spec(name).replace(resolution=res)
    assert count_flops(spec) == count_flops_fvcore(spec)


def test_b0_per_layer_matches_fvcore_by_module(our_model):
    spec = reference_spec("efficientnet-b0")
    by_module = _fvcore(our_model("efficientnet-b0"), 3, 224).by_module_and_operator()
    counted = [c for c in cost_breakdown(spec) if c.kind != "bn"]
    assert len(counted) == 1 + 16 * 3 - 1 + 16 * 2 + 1 + 1  # stem, expand/dw/project, SE, head, fc
    for cost in counted:
        assert dict(by_module[cost.name]) == {cost.kind: cost.flops}, cost
    for cost in cost_breakdown(spec):
        if cost.kind == "bn":
            assert set(by_module[cost.name]) <= {"batch_norm"}  # fvcore counts BN; we do not


def test_b0_matches_fvcore_on_efficientnet_pytorch(official_model):
    ops = _fvcore(official_model("efficientnet-b0"), 3, 224).by_operator()
    assert ops["linear"] == 1_280_000
    assert round(ops["conv"] / 1e5) == 3845  # REFERENCE.md: conv 384.5M
    assert ops["conv"] + ops["linear"] == count_flops(reference_spec("efficientnet-b0"))


RESOLUTIONS = (32, 33, 40, 48, 57, 64, 96)


def test_random_space_samples_match_fvcore(random_trial):
    import random

    rng = random.Random(7)
    checked = set()
    for seed in range(56):
        res = RESOLUTIONS[seed % len(RESOLUTIONS)]
        space = default_space(num_classes=rng.randint(1, 1000), in_channels=rng.randint(1, 4))
        spec = space.sample(random_trial(1000 + seed))
        assert count_flops(spec, res) == count_flops_fvcore(spec, res), (res, spec.to_string())
        checked.add((spec.to_string(), res))
    assert len(checked) == 56


def test_random_off_space_specs_match_fvcore_per_layer(random_arch):
    for seed in range(16):
        spec = random_arch(seed)
        _assert_per_layer(spec, spec.resolution)


def test_pool_skip_costs_nothing_and_matches_fvcore(random_arch):
    """The pooling shortcut (avg_pool2d + channel pad/crop) has no weights and no conv/linear work:
    the formulas give the no-skip network's numbers, and fvcore -- every operator it counts, not
    only conv and linear -- sees exactly the same work as without the shortcut."""
    import dataclasses
    import random

    rng = random.Random(5)
    for seed in range(12):
        spec = random_arch(seed)
        spec = spec.replace(stages=tuple(dataclasses.replace(s, id_skip=True, pool_skip=rng.random() < 0.7)
                                         for s in spec.stages))
        plain = spec.replace(stages=tuple(dataclasses.replace(s, id_skip=False, pool_skip=False)
                                          for s in spec.stages))
        assert count_params(spec) == count_params(plain) == sum(p.numel() for p in build_model(spec).parameters())
        assert cost_breakdown(spec) == cost_breakdown(plain)
        _assert_per_layer(spec, spec.resolution)
        res = spec.resolution
        ours = count_flops_fvcore(spec, res, by_operator=True)
        assert ours == count_flops_fvcore(plain, res, by_operator=True), spec.to_string()
        assert count_flops(spec, res) == ours["conv"] + ours["linear"]


def test_fvcore_sees_the_pooling_shortcut_and_does_not_count_it():
    spec = ArchSpec.from_string("stem=16 r2_k3_s22_e1_i16_o24_se0.25_poolskip r1_k5_s11_e1_i24_o8_c1_poolskip "
                                "head=32 classes=5 res=33")
    analysis = _fvcore(build_model(spec), 3, 33)
    ops = analysis.by_operator()
    assert {"aten::avg_pool2d", "aten::pad"} <= set(analysis.unsupported_ops())  # traced, not counted
    assert ops["conv"] + ops["linear"] == count_flops(spec)
