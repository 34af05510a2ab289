"""Weight inheritance: a subnet run inside the supernet computes what the stand-alone network built
from its spec computes once given the sliced weights (eval mode, every kind of choice)."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch
from optuna.trial import FixedTrial

from effnas.supernet.model import SuperNet, largest_spec, random_spec, smallest_spec
from search_space import ConvType, SearchSpace, default_space

torch.set_num_threads(1)


def _randomise(net: torch.nn.Module, seed: int) -> None:
    """Random weights *and* BN statistics, so that a wrong slice of any tensor shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.add_(1.0)


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    # every op, skip and activation choice of the space, pool skip included
    return SearchSpace.from_config({"skips": ["identity", "none", "pool"]},
                                   num_classes=10, in_channels=1, resolution=32)


@pytest.fixture(scope="module")
def net(space) -> SuperNet:
    torch.manual_seed(0)
    net = SuperNet(space)
    _randomise(net, 1)
    return net.eval()


def _same(net: SuperNet, spec, x: torch.Tensor) -> None:
    """Both forwards in float64: the random weights give logits in the thousands, where float32's
    rounding alone moves them by 1e-4 of their scale; float64 leaves only a wrong slice to see."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the stand-alone network is built in float64 too
    try:
        net.double()
        with torch.no_grad():
            want = net(x.double(), spec)
            got = net.subnet(spec).eval()(x.double())
    finally:
        torch.set_default_dtype(default)
        net.float()  # float32 -> float64 -> float32 is exact
    assert got.shape == want.shape == (x.shape[0], spec.num_classes)
    scale = float(want.abs().max())
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-10 * scale), (spec.to_string(), (got - want).abs().max())


def test_random_subnets_equal_their_stand_alone_networks(space, net):
    x = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    rng = random.Random(0)
    specs = [largest_spec(space), smallest_spec(space)] + [random_spec(space, rng) for _ in range(24)]
    seen = {"op": set(), "skip": set(), "activation": set()}
    for spec in specs:
        _same(net, spec, x)
        seen["op"] |= {s.conv_type for s in spec.stages}
        seen["skip"] |= {s.skip for s in spec.stages}
        seen["activation"].add(spec.activation.value)
    assert seen["op"] == set(ConvType) and seen["skip"] == {"identity", "none", "pool"}
    assert seen["activation"] == set(space.activations)


def test_stem_and_head_width_choices_are_slices():
    """With stem and head widths as choices, the stem, head and classifier are sliced too."""
    space = SearchSpace.from_config({"stem_multipliers": [0.5, 0.75, 1.0], "head_multipliers": [0.25, 0.5, 1.0]},
                                    num_classes=10, in_channels=1, resolution=32)
    torch.manual_seed(0)
    net = SuperNet(space)
    _randomise(net, 3)
    net.eval()
    assert (net.stem.out_channels, net.head.out_channels, net.classifier.in_features) == (32, 1280, 1280)
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(4))
    rng = random.Random(1)
    specs = [largest_spec(space), smallest_spec(space)] + [random_spec(space, rng) for _ in range(12)]
    assert (specs[0].stem, specs[0].head, specs[1].stem, specs[1].head) == (32, 1280, 16, 320)
    assert len({(s.stem, s.head) for s in specs}) >= 5
    for spec in specs:
        _same(net, spec, x)


def test_default_space_with_fixed_trials(net):
    """Points of the default space (as nas-search samples them) through FixedTrial, at 40 px."""
    space = default_space(num_classes=10, in_channels=1, resolution=32)
    supernet = SuperNet(space)
    _randomise(supernet, 3)
    supernet.eval()
    rng = random.Random(1)
    x = torch.randn(2, 1, 40, 40, generator=torch.Generator().manual_seed(4))
    for _ in range(4):
        params = space.params_of(random_spec(space, rng))
        _same(supernet, space.sample(FixedTrial(params)), x)
    for name in ("efficientnet-b0", "mnasnet-a1"):
        from search_space import resolve_arch

        spec = resolve_arch(name).spec(10, 1)
        _same(supernet, space.sample(FixedTrial(space.params_of(spec))), x)


def test_extremes_bound_the_space(space):
    big, small = largest_spec(space), smallest_spec(space)
    for st, b, s in zip(space.stages, big.stages, small.stages):
        assert b.out_filters == max(st.widths) and s.out_filters == min(st.widths)
        assert b.kernel == max(st.kernels) and s.kernel == min(st.kernels)
        assert b.repeats == st.base.repeats + max(st.layer_deltas)
        assert b.conv_type is ConvType.MBCONV and s.conv_type is ConvType.DS


def test_a_spec_outside_the_space_is_one_line(net, space):
    spec = largest_spec(space)
    narrow = spec.replace(stages=(dataclasses.replace(spec.stages[0], out_filters=17),
                                  dataclasses.replace(spec.stages[1], in_filters=17)) + spec.stages[2:])
    for bad, words in ((narrow, "stage 1: out_filters 17 is not in the space"),
                       (spec.replace(num_classes=3), "classes")):
        with pytest.raises(ValueError, match=words) as info:
            net(torch.zeros(1, 1, 32, 32), bad)
        assert "\n" not in str(info.value)


def test_training_forward_backward_reaches_shared_weights(space):
    torch.manual_seed(0)
    net = SuperNet(space).train()
    spec = smallest_spec(space)
    net(torch.randn(4, 1, 32, 32), spec).sum().backward()
    dw = net.stages[0][0].ds.dw.weight.grad
    assert dw is not None and dw[:, :, 1:4, 1:4].abs().sum() > 0  # the centre crop got the gradient
    assert dw[:, :, 0].abs().sum() == 0 and dw[:, :, :, 0].abs().sum() == 0  # the 5x5 rim did not


def test_fair_specs_share_out_every_option(space):
    """FairNAS's strict fairness: m subnets of one step take distinct options of every choice while
    there are options left, so with m >= a choice's options every option is trained at each step."""
    from effnas.supernet.model import fair_specs

    rng = random.Random(0)
    for m in (2, 4):
        for _ in range(5):
            specs = fair_specs(space, rng, m)
            assert len(specs) == m
            params = [space.params_of(s) for s in specs]  # every one a point of the space
            for name in params[0]:
                if not name.endswith(("_op", "_skip", "_filters", "_kernel", "_layers")):
                    continue  # expand and se are asked only for some ops
                stage = space.stages[int(name[1]) - 1]
                options = {"op": stage.ops, "skip": stage.skips, "filters": stage.widths, "kernel": stage.kernels,
                           "layers": stage.layer_deltas}[name.split("_", 1)[1]]
                drawn = [p[name] for p in params]
                assert len(set(drawn)) == min(m, len(options)), (name, drawn)
    uniform = {fair_specs(space, random.Random(s), 1)[0].stages[2].conv_type for s in range(40)}
    assert uniform == {ConvType.MBCONV, ConvType.DS, ConvType.CONV}  # one subnet alone: any option


def test_largest_with_one_choice_changed(space):
    big = largest_spec(space)
    changed = largest_spec(space, {"s3_op": "conv", "s5_skip": "none"})
    assert changed.stages[2].conv_type is ConvType.CONV and not changed.stages[4].id_skip
    same = [i for i in range(len(big.stages)) if i not in (2, 4)]
    assert [changed.stages[i] for i in same] == [big.stages[i] for i in same]
    assert changed.stages[2].out_filters == big.stages[2].out_filters  # the rest of stage 3 stays largest
