"""``spec.to_timm_arch_def()`` against timm's own decoder and builder.

Every spec the exporter accepts is built with timm's ``decode_arch_def`` + ``EfficientNet`` (the
constructor arguments of the exporter's docstring) and must have exactly effnas's parameter count;
a sample of them must also give effnas's outputs once effnas's weights are copied over. Every spec
it refuses must name the stage, and the refusal must be needed: timm, built from the strings the
exporter would have written, gives a different network.

timm (1.0.31) imports torchvision, and the only torchvision for torch 2.13.0 on the package index
is a CUDA build whose compiled ops cannot load beside the CPU torch. ``.ci/run`` installs both,
``--no-deps``, into ``build/timm-ref`` (out of site-packages, so that nothing else imports that
torchvision). Its Python part works without the compiled ops, which timm's EfficientNet does not
use, except that ``import torchvision`` registers fake kernels for ``torchvision::nms``/``qnms`` and
fails when those ops were never defined: where the compiled ops do not load, the two schemas are
defined here first (nothing implements them, so calling them would still fail).
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import re
import sys
import warnings
from dataclasses import replace
from functools import partial
from pathlib import Path
from unittest import mock

import pytest
import torch
from torch import nn

from search_space import (Activation, ArchSpec, ConvType, SearchSpace, build_model, codec,
                          count_params, default_space, reference_spec)

TIMM_DIR = Path(__file__).resolve().parents[2] / "build" / "timm-ref"
_TORCHVISION_SCHEMAS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
                        "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_shim_lib = None  # keeps the schema registrations alive


def _import_timm():
    global _shim_lib
    if TIMM_DIR.is_dir() and str(TIMM_DIR) not in sys.path:
        sys.path.append(str(TIMM_DIR))  # an installed timm/torchvision, if any, comes first
    tv = importlib.util.find_spec("torchvision")
    if importlib.util.find_spec("timm") is None or tv is None:
        pytest.fail(f"timm and torchvision are not importable: install them with `pip install --no-deps "
                    f"--target {TIMM_DIR} timm==1.0.31 torchvision==0.28.0` (the README's test command and "
                    f".ci/run do)", pytrace=False)
    if "torchvision" not in sys.modules:
        try:
            torch.ops.load_library(glob.glob(os.path.join(os.path.dirname(tv.origin), "_C*.so"))[0])
        except (OSError, IndexError):
            _shim_lib = torch.library.Library("torchvision", "FRAGMENT")
            for schema in _TORCHVISION_SCHEMAS:
                _shim_lib.define(schema)
    import timm
    from timm.models._efficientnet_builder import decode_arch_def
    from timm.models.efficientnet import EfficientNet

    return timm, decode_arch_def, EfficientNet


timm, decode_arch_def, EfficientNet = _import_timm()

_ACT = {Activation.SILU: nn.SiLU, Activation.RELU: nn.ReLU, Activation.RELU6: nn.ReLU6}
N_SPACE_SPECS = 250
N_OFF_SPACE_SPECS = 400


def timm_model(spec: ArchSpec, arch_def: list[list[str]] | None = None, device: str = "meta") -> nn.Module:
    """timm's EfficientNet for ``spec``: on the meta device (shapes only) unless weights are
    needed, and there without timm's weight init (``normal_`` on meta tensors costs about 3 ms a
    call; the init changes no shape)."""
    total_stride = 2
    for s in spec.stages:
        total_stride *= s.stride
    no_init = mock.patch.object(timm.models.efficientnet, "efficientnet_init_weights", lambda model: None)
    with no_init if device == "meta" else contextlib.nullcontext():
        return EfficientNet(
            decode_arch_def(spec.to_timm_arch_def() if arch_def is None else arch_def),
            num_classes=spec.num_classes, num_features=spec.head, in_chans=spec.in_channels,
            stem_size=spec.stem, fix_stem=True, round_chs_fn=lambda c: c, act_layer=_ACT[spec.activation],
            norm_layer=partial(nn.BatchNorm2d, eps=1e-3), output_stride=max(32, total_stride),
            device=device)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def unchecked_arch_def(spec: ArchSpec, monkeypatch) -> list[list[str]]:
    """The strings the exporter writes when it does not refuse anything."""
    with monkeypatch.context() as m:
        m.setattr(codec, "_timm_stage_problem", lambda stage, kind: None)
        return spec.to_timm_arch_def()


def refusal_needed(spec: ArchSpec, monkeypatch, seed: int = 0) -> bool:
    """timm, built from what the exporter would write without refusing, is not effnas's network:
    another parameter count, no network at all (a 0-channel squeeze-excite), or, for what has
    no parameters (the pooling skip op), other outputs with effnas's weights."""
    naive_def = unchecked_arch_def(spec, monkeypatch)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Initializing zero-element tensors"
            naive = timm_model(spec, naive_def)
    except ZeroDivisionError:  # timm's init of a conv with 0 output channels
        return True
    if n_params(naive) != count_params(spec):
        return True
    return any(not torch.allclose(a, b, rtol=1e-5, atol=1e-5)
               for a, b in compare_outputs(spec, seed, naive_def))


def compare_outputs(spec: ArchSpec, seed: int, arch_def: list[list[str]] | None = None):
    """Copy a randomised effnas model into timm's (state dicts in order); return ``(timm, effnas)``
    pairs of features and of logits on a random 1 x C x 64 x 64 input.

    With PyTorch's default init and fresh BN statistics an untrained net's features vanish
    (about 1e-12 at the head) and its logits are the classifier's bias, which any structure
    matches; so BN gets random affine weights and running statistics measured on a random batch,
    keeping every layer's activations near unit scale."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # build_model's init (and drop-connect in the calibration pass)
    ours = build_model(spec)
    batch = torch.randn(4, spec.in_channels, 64, 64, generator=gen)
    with torch.no_grad():
        for module in ours.modules():
            if isinstance(module, nn.BatchNorm2d):
                c = module.num_features
                module.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(c, generator=gen) * 0.1)
                module.reset_running_stats()
                module.momentum = None  # running statistics = this batch's
        ours.train()(batch)
    ours.eval()
    theirs = timm_model(spec, arch_def, device="cpu").eval()
    src, dst = ours.state_dict(), theirs.state_dict()
    assert [tuple(v.shape) for v in src.values()] == [tuple(v.shape) for v in dst.values()], spec.to_string()
    theirs.load_state_dict(dict(zip(dst, src.values())))
    x = torch.randn(1, spec.in_channels, 64, 64, generator=gen)
    with torch.no_grad():
        want_features, got_features = ours.features(x), theirs.forward_features(x)
        want, got = ours(x), theirs(x)
    assert want_features.std() > 0.1  # the comparison means something
    return (got_features, want_features), (got, want)


def assert_same_outputs(spec: ArchSpec, seed: int) -> None:
    for a, b in compare_outputs(spec, seed):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=lambda m: f"{spec.to_string()}\n{m}")


def check_strings(spec: ArchSpec, arch_def: list[list[str]]) -> None:
    assert len(arch_def) == len(spec.stages)
    for stage, (block,) in zip(spec.stages, arch_def):
        if stage.conv_type is ConvType.CONV:
            assert block.startswith("cn_") and "_se" not in block
            assert block.endswith("_skip") == stage.id_skip, block
        else:
            assert block.endswith("_noskip") == (not stage.id_skip), block


def test_default_space_specs_match_timm(random_trial, monkeypatch):
    """Random specs of the default space; each refused one (a regular conv with SE) is checked
    again with SE removed from its regular-conv stages, which is also a point of the space."""
    space = default_space(num_classes=10, in_channels=3)
    checked, refused, as_drawn, compared = 0, 0, 0, 0
    residual_cn = 0  # regular-conv layers with a residual among the output-compared specs
    for seed in range(N_SPACE_SPECS):
        spec = space.sample(random_trial(seed))
        try:
            arch_def = spec.to_timm_arch_def()
            as_drawn += 1
        except ValueError as exc:
            refused += 1
            first = next(i for i, s in enumerate(spec.stages, 1)
                         if s.conv_type is ConvType.CONV and s.se_ratio > 0)
            assert str(exc) == f"stage {first} (cn, se 0.25): timm's ConvBnAct has no squeeze-excite"
            assert refusal_needed(spec, monkeypatch)
            spec = spec.replace(stages=tuple(replace(s, se_ratio=0.0) if s.conv_type is ConvType.CONV
                                             else s for s in spec.stages))
            arch_def = spec.to_timm_arch_def()
        check_strings(spec, arch_def)
        assert n_params(timm_model(spec, arch_def)) == count_params(spec), spec.to_string()
        checked += 1
        if seed % 8 == 0:
            assert_same_outputs(spec, seed)
            compared += 1
            residual_cn += sum(s.has_residual(cin, stride) for s in spec.stages
                               if s.conv_type is ConvType.CONV for cin, _, stride in s.layers())
    assert checked == N_SPACE_SPECS and compared >= 30
    assert as_drawn >= 20 and refused >= 150 and residual_cn >= 30
    print(f"\ndefault space: {checked} specs built in timm ({as_drawn} as drawn, {refused} refused "
          f"and re-checked without SE on regular convs), {compared} output-compared")


def test_off_space_specs_match_timm_or_are_refused(random_arch, monkeypatch):
    """Random specs outside the space (odd widths, fractional expansions, odd SE ratios, kernels
    1..7, every activation): accepted ones build exactly in timm, refused ones could not."""
    accepted, compared, reasons = 0, 0, {}
    for seed in range(N_OFF_SPACE_SPECS):
        spec = random_arch(seed)
        try:
            arch_def = spec.to_timm_arch_def()
        except ValueError as exc:
            m = re.match(r"stage (\d+) \((cn|ds|ir)\b[^)]*\): (timm's \S+)", str(exc))
            assert m, str(exc)
            stage = spec.stages[int(m[1]) - 1]
            assert m[2] == {"conv": "cn", "ds": "ds", "mbconv": "ir"}[stage.conv_type.value]
            reasons[m[3]] = reasons.get(m[3], 0) + 1
            assert refusal_needed(spec, monkeypatch), str(exc)
            continue
        check_strings(spec, arch_def)
        assert n_params(timm_model(spec, arch_def)) == count_params(spec), spec.to_string()
        accepted += 1
        if accepted % 4 == 1:
            assert_same_outputs(spec, seed)
            compared += 1
    assert accepted >= 40 and compared >= 10
    assert set(reasons) == {"timm's ConvBnAct", "timm's InvertedResidual", "timm's squeeze-excite"}, reasons
    print(f"\noff-space: {accepted} accepted, {N_OFF_SPACE_SPECS - accepted} refused {reasons}, "
          f"{compared} output-compared")


def test_pool_skip_refused_where_it_pools(random_trial, monkeypatch):
    """MnasNet's pooling skip op has no timm counterpart; on shape-keeping layers it is the
    identity residual and exports as such. (On the B0 base every stage's first layer changes the
    shape, so 'pool' is refused wherever it is drawn.)"""
    space = SearchSpace.from_config({"skips": ["identity", "none", "pool"]}, num_classes=10)
    pooled = pooled_compared = 0
    for seed in range(60):
        spec = space.sample(random_trial(seed))
        first = next((i for i, s in enumerate(spec.stages, 1)
                      if (s.conv_type is ConvType.CONV and s.se_ratio > 0)
                      or (s.pool_skip and (s.stride != 1 or s.in_filters != s.out_filters))), None)
        if first is None:
            assert n_params(timm_model(spec)) == count_params(spec)
            continue
        with pytest.raises(ValueError, match=rf"^stage {first} \(") as info:
            spec.to_timm_arch_def()
        if "pooling" in str(info.value):
            stage = spec.stages[first - 1]
            assert str(info.value).endswith(f"timm has no pooling skip op (the first layer maps "
                                            f"{stage.in_filters} -> {stage.out_filters} channels at "
                                            f"stride {stage.stride})")
            conv_se = any(s.conv_type is ConvType.CONV and s.se_ratio > 0 for s in spec.stages)
            if pooled_compared < 4 and not conv_se:  # same parameters, other outputs
                naive = timm_model(spec, unchecked_arch_def(spec, monkeypatch))
                assert n_params(naive) == count_params(spec) and refusal_needed(spec, monkeypatch, seed)
                pooled_compared += 1
            pooled += 1
    assert pooled >= 20 and pooled_compared == 4
    keeps_shape = ArchSpec.from_string("r1_k3_s11_e1_i16_o16_c1_poolskip r2_k3_s11_e6_i16_o16_poolskip "
                                       "r2_k5_s22_e3_i16_o24", stem=16, num_classes=10)
    assert keeps_shape.to_timm_arch_def() == [["cn_r1_k3_s1_c16_skip"], ["ir_r2_k3_s1_e6_c16"],
                                              ["ir_r2_k5_s2_e3_c24"]]
    assert_same_outputs(keeps_shape, 0)


@pytest.mark.parametrize("name, timm_name, params, act", [
    ("efficientnet-b0", "efficientnet_b0", 5_288_548, nn.SiLU),
    ("mnasnet-a1", "semnasnet_100", 3_887_038, nn.ReLU),  # timm's mnasnet_100 is B1 (no SE)
    ("mobilenetv2", "mobilenetv2_100", 3_504_872, nn.ReLU6),
])
def test_references_match_timm_models(name, timm_name, params, act):
    spec = reference_spec(name)
    ours = timm_model(spec)
    official = timm.create_model(timm_name, device="meta")
    assert n_params(ours) == n_params(official) == count_params(spec) == params
    assert ([tuple(v.shape) for v in ours.state_dict().values()]
            == [tuple(v.shape) for v in official.state_dict().values()])
    assert isinstance(official.bn1.act, act)


def test_refusal_messages():
    conv_se = ArchSpec.from_string("r1_k3_s22_e1_i32_o16_c1_se0.5 r2_k5_s11_e2.5_i16_o24")
    with pytest.raises(ValueError, match=r"^stage 1 \(cn, se 0\.5\): timm's ConvBnAct has no squeeze-excite$"):
        conv_se.to_timm_arch_def()
    odd_mid = ArchSpec.from_string("r2_k3_s22_e1_i32_o16_c1 r2_k5_s11_e2.5_i16_o24")
    with pytest.raises(ValueError, match=r"^stage 2 \(ir, e 2\.5, se 0\): .*make_divisible\(24 \* 2\.5\) = 64, "
                                         r"effnas to int\(24 \* 2\.5\) = 60$"):
        odd_mid.to_timm_arch_def()
    odd_se = ArchSpec.from_string("r1_k3_s11_e1_i32_o20_se0.15")
    with pytest.raises(ValueError, match=r"^stage 1 \(ds, se 0\.15\): timm's squeeze-excite for a 32-channel "
                                         r"input has 5 channels, effnas's max\(1, int\(32 \* 0\.15\)\) = 4$"):
        odd_se.to_timm_arch_def()
    ok = ArchSpec.from_string("r2_k3_s22_e1_i32_o16_c1 r2_k5_s11_e2.5_i16_o16_noskip r1_k3_s11_e1_i16_o16_c1_noskip")
    assert ok.to_timm_arch_def() == [["cn_r2_k3_s2_c16_skip"], ["ir_r2_k5_s1_e2.5_c16_noskip"],
                                     ["cn_r1_k3_s1_c16"]]
