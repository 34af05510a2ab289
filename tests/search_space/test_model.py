"""The built network: shapes, memory formats, drop-connect, BN momentum."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from search_space import ArchSpec, ConvType, build_model, default_space, reference_names, reference_spec
from search_space.model import _drop_connect


@pytest.mark.parametrize("name", reference_names())
def test_reference_forward_small_resolutions(name, our_model):
    model = our_model(name)  # eval mode, shared: never trained here
    assert not model.training
    with torch.no_grad():
        for res in (32, 40):  # 40 is not a multiple of 32
            x = torch.randn(2, 3, res, res)
            y = model(x)
            assert y.shape == (2, 1000)
            assert torch.isfinite(y).all()
            y_cl = model(x.contiguous(memory_format=torch.channels_last))
            assert y_cl.shape == (2, 1000)
            torch.testing.assert_close(y_cl, y, rtol=1e-4, atol=1e-4)


def test_random_samples_forward_train_and_eval(random_trial):
    import random

    rng = random.Random(3)
    for seed in range(10):
        classes, channels = rng.randint(1, 20), rng.randint(1, 4)
        res = rng.choice([32, 33, 40, 47, 64])
        spec = default_space(num_classes=classes, in_channels=channels).sample(random_trial(seed))
        model = build_model(spec)
        x = torch.randn(3, channels, res, res)
        model.train()
        y = model(x)
        assert y.shape == (3, classes)
        if seed == 0:  # gradients reach every parameter
            y.sum().backward()
            assert all(p.grad is not None for p in model.parameters())
        model.eval()
        with torch.no_grad():
            y = model(x)
            y_cl = model(x.contiguous(memory_format=torch.channels_last))
            model = model.to(memory_format=torch.channels_last)
            y_cl2 = model(x.contiguous(memory_format=torch.channels_last))
        assert y.shape == y_cl.shape == y_cl2.shape == (3, classes)
        torch.testing.assert_close(y_cl, y, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(y_cl2, y, rtol=1e-4, atol=1e-4)


def test_off_space_forward(random_arch):
    for seed in range(10):
        spec = random_arch(seed)
        model = build_model(spec).eval()
        with torch.no_grad():
            y = model(torch.randn(2, spec.in_channels, spec.resolution, spec.resolution))
        assert y.shape == (2, spec.num_classes)


def test_activation_and_module_types():
    assert isinstance(build_model(reference_spec("efficientnet-b0")).stem.act, nn.SiLU)
    assert isinstance(build_model(reference_spec("mnasnet-a1")).stem.act, nn.ReLU)
    assert isinstance(build_model(reference_spec("mobilenetv2")).head.act, nn.ReLU6)
    model = build_model(reference_spec("efficientnet-b0", num_classes=10, in_channels=1))
    assert model.stem.conv.in_channels == 1 and model.classifier.out_features == 10
    assert model.dropout.p == 0.2
    assert model.spec == reference_spec("efficientnet-b0", num_classes=10, in_channels=1)
    residual = [b.residual for b in model.blocks]
    # B0: residual on every repeat (stride 1, in == out), never on a stage's first layer
    assert residual == [False, False, True, False, True, False, True, True, False, True, True,
                        False, True, True, True, False]
    mnas = build_model(reference_spec("mnasnet-a1"))
    assert mnas.blocks[0].residual is False  # noskip, although stride 1 and 32 != 16 anyway


def _residual_spec(drop_connect: float) -> ArchSpec:
    # every stage has repeats, so most blocks are residual
    return ArchSpec.from_string(
        "stem=16 r3_k3_s11_e1_i16_o16_se0.25 r3_k3_s22_e3_i16_o24 head=32 classes=5 res=32",
        dropout=0.0, drop_connect=drop_connect)


def test_drop_connect_rates_grow_linearly():
    spec = reference_spec("efficientnet-b0")
    model = build_model(spec)
    n = spec.num_blocks
    assert [b.drop_connect for b in model.blocks] == pytest.approx([0.2 * i / n for i in range(n)])
    assert all(b.drop_connect == 0 for b in build_model(spec.replace(drop_connect=0.0)).blocks)


def test_drop_connect_only_in_train_mode():
    torch.manual_seed(0)
    plain = build_model(_residual_spec(0.0))
    for m in plain.modules():  # the residual branches may start as zero (zero-init last BN)
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
    dropped = build_model(_residual_spec(0.9))
    dropped.load_state_dict(plain.state_dict())
    assert sum(b.residual for b in plain.blocks) == 5
    x = torch.randn(8, 3, 32, 32)
    plain.eval(), dropped.eval()
    with torch.no_grad():
        # eval: drop-connect is off, so the rate does not matter and the output is deterministic
        torch.testing.assert_close(dropped(x), plain(x), rtol=0, atol=0)
        torch.testing.assert_close(dropped(x), dropped(x), rtol=0, atol=0)
        plain.train(), dropped.train()
        # train, rate 0: deterministic (BN uses batch statistics, dropout is 0)
        torch.testing.assert_close(plain(x), plain(x), rtol=0, atol=0)
        torch.manual_seed(1)
        a = dropped(x)
        torch.manual_seed(2)
        b = dropped(x)
        assert not torch.equal(a, b)  # random branches dropped per sample
        assert not torch.equal(a, plain(x))


def test_drop_connect_function():
    x = torch.randn(4000, 2, 1, 1) + 5
    assert _drop_connect(x, 0.5, training=False) is x
    assert _drop_connect(x, 0.0, training=True) is x
    torch.manual_seed(0)
    y = _drop_connect(x, 0.25, training=True)
    kept = (y != 0).all(dim=(1, 2, 3))
    dropped = (y == 0).all(dim=(1, 2, 3))
    assert bool((kept | dropped).all())  # whole samples are dropped, not single elements
    torch.testing.assert_close(y[kept], x[kept] / 0.75)
    assert abs(dropped.float().mean().item() - 0.25) < 0.03


def test_bn_momentum_and_eps():
    spec = reference_spec("mnasnet-a1")
    bns = lambda m: [b for b in m.modules() if isinstance(b, nn.BatchNorm2d)]  # noqa: E731
    assert {(b.momentum, b.eps) for b in bns(build_model(spec))} == {(0.1, 1e-3)}
    assert {(b.momentum, b.eps) for b in bns(build_model(spec, bn_momentum=0.01, bn_eps=1e-5))} \
        == {(0.01, 1e-5)}
    assert {b.momentum for b in bns(build_model(spec, bn_momentum=1))} == {1}


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, 99, math.nan, math.inf, "0.1", None, True])
def test_bn_momentum_validated(bad):
    with pytest.raises(ValueError) as info:
        build_model(reference_spec("mobilenetv2"), bn_momentum=bad)
    assert "bn_momentum" in str(info.value) and repr(bad) in str(info.value)


@pytest.mark.parametrize("bad", [None, "efficientnet-b0", {"stages": []}])
def test_build_model_needs_a_spec(bad):
    with pytest.raises(ValueError, match="ArchSpec"):
        build_model(bad)  # type: ignore[arg-type]


def test_bn_momentum_changes_running_stats():
    spec = _residual_spec(0.0)
    x = torch.randn(8, 3, 32, 32)
    stats = []
    for momentum in (0.01, 0.1):
        torch.manual_seed(0)
        model = build_model(spec, bn_momentum=momentum).train()
        with torch.no_grad():
            model(x)
        stats.append(model.stem.bn.running_mean.clone())
    # running_mean = momentum * batch_mean (from 0): ratio 10
    torch.testing.assert_close(stats[1], stats[0] * 10, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("size, kernel, stride, groups, bias", [
    (1, 5, 1, 8, False), (2, 5, 1, 8, False), (2, 5, 2, 8, False), (2, 3, 2, 8, True), (1, 3, 1, 8, True),
    (1, 3, 2, 8, False), (3, 7, 1, 8, False), (2, 5, 1, 1, False), (4, 3, 2, 8, False), (8, 5, 2, 8, False),
    (1, 1, 1, 1, True), (1, 1, 1, 1, False), (1, 3, 2, 1, False), (2, 2, 2, 8, False), (2, 1, 1, 1, True),
    (3, 5, 2, 8, False), (5, 3, 1, 2, True)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_spatial_conv_fast_path_is_exact(size, kernel, stride, groups, bias, channels_last):
    """Cropping taps that only see padding, and computing a 1x1-on-1x1 conv as a matrix product or a
    per-channel scale, changes neither outputs nor gradients (weight, bias and input)."""
    from search_space.model import spatial_conv

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 8, kernel, stride, kernel // 2, groups=groups, bias=bias)
    x = torch.randn(4, 8, size, size)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    params = [x, conv.weight] + ([conv.bias] if bias else [])
    full = conv(x)
    grad_out = torch.randn_like(full)
    grads_full = torch.autograd.grad(full, params, grad_out)
    fast = spatial_conv(conv, x, fast=True)
    grads = torch.autograd.grad(fast, params, grad_out)
    assert fast.shape == full.shape
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-6)
    for g, g_full in zip(grads, grads_full):
        torch.testing.assert_close(g, g_full, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("groups", [1, 8])
def test_spatial_conv_keeps_the_output_size_of_a_padded_1x1_conv(groups):
    """Not one of effnas' layers, but the fast path takes any Conv2d: a padded 1x1 kernel grows the map."""
    from search_space.model import spatial_conv

    conv = torch.nn.Conv2d(8, 8, 1, 1, 1, groups=groups)
    x = torch.randn(2, 8, 1, 1)
    torch.testing.assert_close(spatial_conv(conv, x, fast=True), conv(x))


def test_spatial_conv_takes_the_fast_forms_on_tiny_maps():
    """The fast path really avoids the convolution where it can (else the test above proves little)."""
    from search_space.model import spatial_conv

    x = torch.randn(2, 8, 1, 1)
    pointwise = torch.nn.Conv2d(8, 4, 1, bias=False)
    depthwise5 = torch.nn.Conv2d(8, 8, 5, 1, 2, groups=8, bias=False)
    dw_stride2 = torch.nn.Conv2d(8, 8, 3, 2, 1, groups=8, bias=False)
    for conv in (pointwise, depthwise5, dw_stride2):  # 1x1 maps: a matmul or a scale, no convolution
        with torch.profiler.profile() as prof:
            spatial_conv(conv, x, fast=True)
        names = {e.key for e in prof.key_averages()}
        assert names and not any("conv" in n for n in names), names
    with torch.profiler.profile(record_shapes=True) as prof:
        spatial_conv(dw_stride2, torch.randn(2, 8, 2, 2), fast=True)
    conv_events = [e for e in prof.events() if e.name == "aten::convolution"]
    assert conv_events and conv_events[0].input_shapes[1] == [8, 1, 2, 2]


def test_train_and_eval_mode_compute_the_same_function_at_tiny_resolution():
    spec = reference_spec("efficientnet-b0", num_classes=10, in_channels=1).replace(dropout=0.0, drop_connect=0.0)
    model = build_model(spec)
    x = torch.randn(4, 1, 32, 32)
    model.train()
    for m in model.modules():  # freeze BN to batch statistics in both modes: compare the convs only
        if isinstance(m, torch.nn.BatchNorm2d):
            m.track_running_stats = False
            m.running_mean = m.running_var = None
    train_out = model(x)
    model.eval()
    torch.testing.assert_close(model(x), train_out, rtol=1e-4, atol=1e-5)


# -- the pooling skip op -------------------------------------------------------------------------

# stage 1 keeps the shape, stage 2 strides and widens, stage 3 narrows at stride 1, stage 4 strides
# and narrows: every case of the pooling shortcut
POOLED = ("stem=16 r2_k3_s11_e3_i16_o16_poolskip r2_k3_s22_e1_i16_o24_se0.25_poolskip "
          "r1_k5_s11_e1_i24_o8_c1_poolskip r1_k3_s22_e6_i8_o8_poolskip r1_k3_s22_e3_i8_o4_poolskip "
          "head=32 classes=5 res=33")


def _reference_pool(x: torch.Tensor, stride: int, cout: int) -> torch.Tensor:
    """The documented shortcut, written out: mean over the in-bounds part of the 3x3 window centred
    on (stride * i, stride * j), then the first min(in, out) channels, zero-padded to out."""
    n, cin, h, w = x.shape
    if stride == 2:
        out = torch.zeros(n, cin, (h + 1) // 2, (w + 1) // 2)
        for i in range(out.shape[2]):
            for j in range(out.shape[3]):
                win = x[:, :, max(0, 2 * i - 1):2 * i + 2, max(0, 2 * j - 1):2 * j + 2]
                out[:, :, i, j] = win.mean((2, 3))
        x = out
    y = torch.zeros(n, cout, x.shape[2], x.shape[3])
    c = min(cin, cout)
    y[:, :c] = x[:, :c]
    return y


def test_pool_shortcut_is_what_the_docstring_says():
    spec = ArchSpec.from_string(POOLED)
    model = build_model(spec).eval()
    kinds = [("identity" if b.residual else "pool" if b.pool_shortcut else None) for b in model.blocks]
    # stage 1: 16 -> 16 stride 1 twice (identity); stage 2: 16 -> 24 stride 2 (pool), then identity;
    # stage 3: 24 -> 8 (pool); stage 4: 8 -> 8 stride 2 (pool); stage 5: 8 -> 4 stride 2 (pool)
    assert kinds == ["identity", "identity", "pool", "identity", "pool", "pool", "pool"]
    assert [s.shortcut(cin, st) for s in spec.stages for cin, _, st in s.layers()] == kinds
    torch.manual_seed(0)
    x = torch.randn(2, 16, 17, 17)  # odd size: the pool's output must be ceil(17 / 2) = 9
    with torch.no_grad():
        for block in model.blocks:
            last = block.bn if block.conv_type.value == "conv" else block.bn2
            nn.init.zeros_(last.weight), nn.init.zeros_(last.bias)  # the branch outputs zero
            y = block(x)
            if block.residual:
                torch.testing.assert_close(y, x, rtol=0, atol=0)
            else:
                want = _reference_pool(x, block.stride, block.out_channels)
                torch.testing.assert_close(y, want, rtol=1e-6, atol=1e-6)
                y_cl = block(x.contiguous(memory_format=torch.channels_last))
                torch.testing.assert_close(y_cl, want, rtol=1e-6, atol=1e-6)
            x = torch.randn_like(y)


def test_pool_skip_model_trains_and_has_no_weights_of_its_own():
    pooled = ArchSpec.from_string(POOLED)
    plain = ArchSpec.from_string(POOLED.replace("_poolskip", "_noskip"))
    a, b = build_model(pooled), build_model(plain)
    assert [(k, v.shape) for k, v in a.state_dict().items()] == [(k, v.shape) for k, v in b.state_dict().items()]
    # zero-init only where the shortcut is an identity; drop-connect on every shortcut
    for block in a.blocks:
        last = block.bn if block.conv_type.value == "conv" else block.bn2
        assert bool((last.weight == 0).all()) == block.residual
    model = build_model(pooled.replace(drop_connect=0.5)).train()
    x = torch.randn(4, 3, 33, 33)
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    torch.manual_seed(1)
    first = model(x)
    torch.manual_seed(2)
    assert not torch.equal(first, model(x))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x.contiguous(memory_format=torch.channels_last)),
                                   rtol=1e-4, atol=1e-4)


def test_equal_network_keys_build_the_same_network():
    """Specs the space counts once (equal ``network_key``) build the same model: same parameters,
    same outputs with the same weights. Pairs: a skip op that adds no shortcut, pool on
    shape-keeping layers, a run of layers split differently between two stages."""
    pairs = [
        ("stem=16 r1_k3_s22_e6_i16_o24 r2_k3_s11_e6_i24_o24_se0.25",
         "stem=16 r1_k3_s22_e6_i16_o24_noskip r2_k3_s11_e6_i24_o24_se0.25_poolskip"),
        ("stem=16 r2_k3_s22_e6_i16_o24_se0.25 r1_k3_s11_e6_i24_o24_se0.25",
         "stem=16 r1_k3_s22_e6_i16_o24_se0.25 r2_k3_s11_e6_i24_o24_se0.25_poolskip"),
        ("stem=8 r2_k3_s11_e3_i8_o8", "stem=8 r2_k3_s11_e3.1_i8_o8_poolskip"),
    ]
    for one, other in pairs:
        a = ArchSpec.from_string(one + " head=16 classes=3", drop_connect=0.2)
        b = ArchSpec.from_string(other + " head=16 classes=3", drop_connect=0.2)
        assert a != b and a.network_key() == b.network_key()
        ma, mb = build_model(a).eval(), build_model(b).eval()
        assert [(k, v.shape) for k, v in ma.state_dict().items()] == \
            [(k, v.shape) for k, v in mb.state_dict().items()]
        assert [blk.drop_connect for blk in ma.blocks] == [blk.drop_connect for blk in mb.blocks]
        for m in ma.modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.uniform_(m.weight, 0.5, 1.5)
        mb.load_state_dict(ma.state_dict())
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(ma(x), mb(x), rtol=0, atol=0)


def _random_bn_statistics(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g))
            m.running_var.copy_(torch.rand(c, generator=g) * 2 + 0.2)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g))


@pytest.mark.parametrize("channels_last", [False, True])
def test_fold_batchnorm_keeps_the_eval_outputs(random_arch, channels_last):
    from search_space.model import fold_batchnorm

    specs = [random_arch(seed) for seed in range(8)] + [reference_spec("efficientnet-b0"),
                                                           reference_spec("mnasnet-a1")]
    types = {block.conv_type for spec in specs for block in spec.stages}
    assert types == set(ConvType)  # the regular conv, the separable conv and MBConv all folded
    for seed, spec in enumerate(specs):
        model = build_model(spec).eval()
        _random_bn_statistics(model, seed)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model = model.to(memory_format=fmt)
        x = torch.randn(4, spec.in_channels, 40, 40).contiguous(memory_format=fmt)
        with torch.no_grad():
            expected = model(x)
            folded = fold_batchnorm(model)
            assert folded is model
            assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
            got = model(x)
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(fold_batchnorm(model)(x), got)  # folding again changes nothing


def test_fold_batchnorm_works_outside_a_callers_no_grad():
    from search_space.model import fold_batchnorm

    spec = reference_spec("efficientnet-b0")
    model = build_model(spec).eval()
    _random_bn_statistics(model, 0)
    x = torch.randn(2, spec.in_channels, 32, 32)
    with torch.no_grad():
        expected = model(x)
    fold_batchnorm(model)  # outside no_grad: the parameters require grad; in-place changes must not be tracked
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4)


def test_fold_batchnorm_refuses_a_training_model_and_other_modules():
    from search_space.model import fold_batchnorm

    model = build_model(reference_spec("efficientnet-b0"))
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(model)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) > 0  # untouched
    with pytest.raises(ValueError, match="needs an EffNet, got Linear"):
        fold_batchnorm(nn.Linear(2, 2))
