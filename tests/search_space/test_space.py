"""The factorized hierarchical search space: membership of published nets, size, sampling."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.samplers import RandomSampler
from optuna.trial import FixedTrial

from search_space import (ArchSpec, ConvType, SearchSpace, count_flops, count_params, default_space,
                          reference_spec, round_filters)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_efficientnet_b0_is_a_point():
    space = default_space()
    b0 = reference_spec("efficientnet-b0")
    params = space.params_of(b0)
    assert space.sample(FixedTrial(params)) == b0
    assert params["s1_op"] == "mbconv" and params["s1_expand"] == 1  # ds = MBConv e1
    assert {params[f"s{i}_expand"] for i in range(2, 8)} == {6}
    assert all(params[f"s{i}_layers"] == 0 for i in range(1, 8))


def test_mnasnet_a1_snapped_onto_the_paper_space():
    """Without MnasNet-A1 included (the paper's space on B0), snapping maps A1 to a neighbour."""
    space = SearchSpace(include=[])
    mnas = reference_spec("mnasnet-a1")
    params = space.params_of(mnas, snap=True)
    assert params["s6_filters"] == 144
    spec = space.sample(FixedTrial(params))
    assert len(spec.stages) == 7
    for i, (got, want) in enumerate(zip(spec.stages, mnas.stages)):
        assert (got.conv_type, got.kernel, got.stride, got.expand_ratio, got.se_ratio, got.id_skip,
                got.repeats) == (want.conv_type, want.kernel, want.stride, want.expand_ratio,
                                 want.se_ratio, want.id_skip, want.repeats), i
        assert got.out_filters == (144 if i == 5 else want.out_filters)
    assert spec.stages[6].in_filters == 144
    assert [s.repeats for s in spec.stages] == [1, 2, 3, 4, 2, 3, 1]
    assert spec.stages[0].conv_type is ConvType.DS and not spec.stages[0].id_skip
    # stem, head, activation come from the base
    b0 = reference_spec("efficientnet-b0")
    assert (spec.stem, spec.head, spec.activation) == (b0.stem, b0.head, b0.activation)


def test_mnasnet_a1_without_snap_names_stage_6():
    with pytest.raises(ValueError) as info:
        SearchSpace(include=[]).params_of(reference_spec("mnasnet-a1"))
    msg = str(info.value)
    assert "stage 6" in msg and "160" in msg and "144" in msg


def _edit(old: str, new: str):
    return lambda s: ArchSpec.from_string(s.to_string().replace(old, new))


@pytest.mark.parametrize("change,fragment", [
    (lambda s: s.replace(activation="relu6"), "activation"),  # relu is a choice (MnasNet-A1's)
    (lambda s: s.replace(head=1408), "head"),
    (_edit("r1_k3_s11_e6_i192_o320", "r1_k7_s11_e6_i192_o320"), "stage 7: kernel 7"),
    (_edit("r1_k3_s11_e6_i192_o320", "r1_k3_s22_e6_i192_o320"), "stage 7: stride 2"),
    (_edit("r3_k3_s22_e6_i40_o80", "r3_k3_s22_e4_i40_o80"), "stage 4: expand_ratio 4"),
    (_edit("r4_k5_s22_e6_i112", "r6_k5_s22_e6_i112"), "stage 6: layer delta 2"),
    (_edit("i80_o112_se0.25", "i80_o112_se0.5"), "stage 5: se_ratio 0.5"),
    (_edit("i32_o16_se0.25", "i32_o16_se0.25_noskip r1_k3_s11_e1_i16_o16"),
     "8 stages"),
    (lambda s: s.replace(stages=s.stages[:6]), "6 stages"),
])
def test_params_of_rejects_what_is_not_in_the_space(change, fragment):
    spec = change(reference_spec("efficientnet-b0"))
    with pytest.raises(ValueError) as info:
        default_space().params_of(spec)
    assert fragment in str(info.value)


def test_default_space_structure_and_size():
    space = default_space()
    stages = space.stages
    assert len(stages) == 7
    assert [st.widths for st in stages] == [
        (16, 24), (24, 32), (32, 40, 48), (64, 80, 104), (88, 112, 144), (144, 160, 192, 240),
        (240, 320, 400)]  # 160: MnasNet-A1's stage 6, included
    a1 = reference_spec("mnasnet-a1")
    for st, a in zip(stages, a1.stages):
        assert st.widths == tuple(sorted({round_filters(st.base.out_filters, m)
                                          for m in (0.75, 1.0, 1.25)} | {a.out_filters}))
        # a delta that would empty a stage is dropped, not clamped
        assert st.layer_deltas == ((0, 1) if st.base.repeats == 1 else (-1, 0, 1))
        assert st.op_variants == 4  # conv, ds (= mbconv e1), mbconv e3, mbconv e6
    assert space.activations == ("silu", "relu")
    assert [st.size for st in stages] == [128, 192, 288, 288, 288, 384, 192]
    assert space.assignments == math.prod(st.size for st in stages) * 2 == 128 * 192 ** 2 * 288 ** 3 * 384 * 2
    assert space.assignments == 86_566_749_478_060_032  # 8.7e16 parameter assignments (specs)
    assert space.size == 34_715_307_973_017_600  # 3.5e16 distinct networks
    assert space.param_names()[:7] == ["s1_op", "s1_expand", "s1_kernel", "s1_se", "s1_skip",
                                       "s1_filters", "s1_layers"]
    assert space.param_names()[-1] == "activation"
    assert len(space.param_names()) == 50


def test_paper_space_counts():
    """``include=[]``: MnasNet's choices only. 3.2e16 spellings (the README's old number) are
    1.3e16 networks."""
    space = SearchSpace(include=[])
    assert [st.widths for st in space.stages][5] == (144, 192, 240)
    assert space.activations == ("silu",) and space.included == ()
    assert space.assignments == 128 * 192 ** 2 * 288 ** 4 == 32_462_531_054_272_512
    assert space.size == 13_130_761_922_150_400
    assert SearchSpace(include=[], skips=("identity", "none", "pool")).size == 297_291_408_526_540_800


class _Enumerator:
    """A trial that walks the decision tree (conditional parameters included) depth first."""

    def __init__(self, path: list[int]) -> None:
        self.path, self.arity, self.params = path, [], {}

    def suggest_categorical(self, name, choices):
        choices = list(choices)
        i = len(self.arity)
        if i == len(self.path):
            self.path.append(0)
        self.arity.append(len(choices))
        self.params[name] = choices[self.path[i]]
        return self.params[name]


def _enumerate(space: SearchSpace):
    path: list[int] = []
    while True:
        trial = _Enumerator(path)
        yield space.sample(trial), trial.params
        path = trial.path[:len(trial.arity)]
        while path and path[-1] + 1 >= trial.arity[len(path) - 1]:
            path.pop()
        if not path:
            return
        path[-1] += 1


def test_size_equals_brute_force_enumeration():
    base = ArchSpec.from_string("r1_k3_s11_e1_i32_o16 r2_k3_s22_e6_i16_o24", head=64,
                                num_classes=10, resolution=32)
    space = SearchSpace(base=base, ops=("mbconv", "ds", "conv"), expand_ratios=(3, 6), kernels=(3,),
                        se_ratios=(0.0, 0.25), filter_multipliers=(0.5, 0.75, 1.0, 1.25),
                        layer_deltas=(-1, 0, 1, 2))
    # 16x{.5,.75,1,1.25} -> {8,16,16,24}; 24x -> {16,24,24,32}: rounding collisions are merged
    assert [st.widths for st in space.stages] == [(8, 16, 24), (16, 24, 32)]
    assert [st.layer_deltas for st in space.stages] == [(0, 1, 2), (-1, 0, 1, 2)]
    assert [st.size for st in space.stages] == [4 * 2 * 2 * 3 * 3, 4 * 2 * 2 * 3 * 4]
    strings, networks, count = set(), set(), 0
    for i, (spec, params) in enumerate(_enumerate(space)):
        count += 1
        strings.add(spec.to_string())
        networks.add(spec.network_key())
        if i % 97 == 0:
            assert space.params_of(spec) == params
    assert count == space.assignments == 144 * 192
    assert len(strings) == space.assignments  # every assignment is a different spec...
    # ... but not a different network: stage 1 (32 -> 8/16/24, stride 1) with one layer can
    # never be residual, so its skip choice changes the string only
    assert len(networks) == space.size < space.assignments


def test_random_samples_are_valid_and_invert(random_trial):
    space = default_space(num_classes=10, in_channels=1, resolution=64)
    study = optuna.create_study(sampler=RandomSampler(seed=0))
    specs = set()
    for _ in range(100):
        trial = study.ask()
        spec = space.sample(trial)
        assert isinstance(spec, ArchSpec)
        assert (spec.num_classes, spec.in_channels, spec.resolution) == (10, 1, 64)
        assert [s.stride for s in spec.stages] == [s.stride for s in space.base.stages]
        assert space.params_of(spec) == trial.params
        assert space.sample(FixedTrial(trial.params)) == spec
        study.tell(trial, 0.0)
        specs.add(spec)
    assert len(specs) == 100
    # the custom trial stand-in gives the same guarantees
    for seed in range(100):
        t = random_trial(seed)
        spec = space.sample(t)
        assert space.params_of(spec) == t.params


def test_enqueue_trial_reproduces_published_nets():
    space = default_space()
    b0, mnas = reference_spec("efficientnet-b0"), reference_spec("mnasnet-a1")
    study = optuna.create_study(sampler=RandomSampler(seed=1))
    study.enqueue_trial(space.params_of(b0))
    study.enqueue_trial(space.params_of(mnas, snap=True))
    assert space.sample(study.ask()) == b0
    assert space.sample(study.ask()).stages[2] == mnas.stages[2]


def test_from_config_and_bases():
    assert default_space() == SearchSpace.from_config({})
    assert default_space().base == reference_spec("efficientnet-b0")
    space = SearchSpace.from_config({"base": "mnasnet-a1", "name": "mnasnet", "kernels": [3, 5, 7]},
                                    num_classes=10, in_channels=1, resolution=32)
    expected = reference_spec("mnasnet-a1", num_classes=10, in_channels=1).replace(resolution=32)
    assert space.base == expected
    assert space.kernels == (3, 5, 7)
    text = "r1_k3_s11_e1_i32_o16 r2_k3_s22_e6_i16_o24"
    assert SearchSpace.from_config({"base": text}).base.stages == ArchSpec.from_string(text).stages
    spec = reference_spec("mobilenetv2")
    assert SearchSpace.from_config({"base": spec}).base == spec
    assert default_space(num_classes=7).base.num_classes == 7


@pytest.mark.parametrize("cfg,fragment", [
    ({"kernel": [3, 5]}, "kernel"),                               # unknown key
    ({"bogus": 1}, "bogus"),
    ({"kernels": []}, "space.kernels must not be empty"),        # empty list
    ({"ops": []}, "space.ops must not be empty"),
    ({"filter_multipliers": []}, "filter_multipliers"),
    ({"kernels": [3, 4]}, "4"),                                   # even kernel
    ({"kernels": [3, 3]}, "duplicates"),
    ({"kernels": [3.0]}, "3.0"),
    ({"ops": ["ds", "mbconv"]}, "ds"),                            # ds + mbconv e1 twice
    ({"ops": ["mbconv", "sep"]}, "sep"),
    ({"expand_ratios": [0.5, 6]}, "0.5"),
    ({"se_ratios": [0, 1.5]}, "1.5"),
    ({"skips": ["identity", "avg"]}, "avg"),                       # pool is valid, avg is not
    ({"include": ["efficientnet-b0", "efficientnet-b3"]}, "efficientnet-b3"),  # depth does not fit
    ({"include": ["resnet50"]}, "resnet50"),
    ({"filter_multipliers": [0, 1.0]}, "filter_multipliers"),
    ({"layer_deltas": [-1]}, "stage 1"),                          # empties a 1-layer stage
    ({"layer_deltas": [0.5]}, "0.5"),
    ({"base": "resnet50"}, "resnet50"),
])
def test_from_config_validation(cfg, fragment):
    with pytest.raises(ValueError) as info:
        SearchSpace.from_config(cfg)
    assert fragment in str(info.value), str(info.value)


def test_ds_op_without_mbconv_e1():
    space = SearchSpace.from_config({"ops": ["ds", "mbconv", "conv"], "expand_ratios": [3, 6]})
    assert space.stages[0].op_variants == 4
    b0 = reference_spec("efficientnet-b0")
    params = space.params_of(b0)
    assert params["s1_op"] == "ds" and "s1_expand" not in params
    assert space.sample(FixedTrial(params)) == b0


# -- MnasNet-A1 is an exact point of the default space ------------------------------------------


def test_default_warm_starts_train_exactly_the_published_networks():
    """What ``nas-search`` does with its defaults: the space from the ``space`` config group's
    defaults, each ``search.warm_start`` entry resolved with the task's head and mapped with
    ``params_of(..., snap=True)``. Both are exact points: snapping changes nothing, and the
    trained network is the reference with the task's head and resolution and the search's
    drop-connect -- the only difference the README lists (A1 is published without drop-connect)."""
    from effnas.config import SpaceConfig
    from nas.config import SearchSettings

    from search_space import resolve_arch

    classes, channels, res = 10, 1, 32
    space = SpaceConfig().build(num_classes=classes, in_channels=channels, resolution=res)
    assert space == default_space(classes, channels, res)
    assert SearchSettings().warm_start == ["efficientnet-b0", "mnasnet-a1"]
    for name in SearchSettings().warm_start:
        ref = resolve_arch(name, what="search.warm_start").spec(classes, channels)
        params = space.params_of(ref, snap=True)
        assert params == space.params_of(ref)  # no snapping needed
        trained = space.sample(FixedTrial(params))
        assert trained == ref.replace(resolution=res, drop_connect=space.base.drop_connect)
        assert count_params(trained) == count_params(ref)
        assert count_flops(trained) == count_flops(ref, res)
        full = default_space().sample(FixedTrial(default_space().params_of(reference_spec(name))))
        assert count_params(full) == count_params(reference_spec(name))
        assert count_flops(full) == count_flops(reference_spec(name))
    a1 = reference_spec("mnasnet-a1")
    assert space.params_of(a1.replace(num_classes=classes, in_channels=channels))["s6_filters"] == 160
    exact = default_space().sample(FixedTrial(default_space().params_of(a1)))
    assert exact == a1.replace(drop_connect=0.2)
    assert (count_params(exact), count_flops(exact, 224)) == (3_887_038, 311_579_072)
    assert exact.activation.value == "relu" and not exact.stages[0].id_skip


def test_include_rules():
    b0, a1 = reference_spec("efficientnet-b0"), reference_spec("mnasnet-a1")
    auto = default_space()
    assert auto.include is None and auto.included == (b0, a1.replace(resolution=224))
    assert SearchSpace(include=["efficientnet-b0", "mnasnet-a1"]) == SearchSpace(
        include=("efficientnet-b0", "mnasnet-a1"))
    assert SearchSpace(include=["mnasnet-a1"]).stages == auto.stages
    assert SearchSpace(include=["mnasnet-a1"]).activations == auto.activations
    # a listed network may be a string or a spec
    assert SearchSpace(include=[a1.to_string()]).stages == SearchSpace(include=[a1]).stages == auto.stages
    # symmetric on an A1 base: B0's 192 and SiLU join
    on_a1 = SearchSpace.from_config({"base": "mnasnet-a1"})
    assert on_a1.stages[5].widths == (120, 160, 192, 200) and on_a1.activations == ("relu", "silu")
    assert on_a1.sample(FixedTrial(on_a1.params_of(b0))) == b0.replace(drop_connect=0.0)
    # auto skips what cannot become a point: A1 has 5x5 kernels, B1's depths are out of reach
    k3 = SearchSpace(kernels=(3,))
    assert k3.included == () and k3.stages[5].widths == (144, 192, 240) and k3.activations == ("silu",)
    b1 = SearchSpace.from_config({"base": "efficientnet-b1"})
    assert [s for s in b1.included] == [b0.replace(resolution=240)]
    assert b1.activations == ("silu",)
    # a base of another shape: nothing to include
    small = SearchSpace(base=ArchSpec.from_string("r1_k3_s11_e1_i32_o16 r2_k3_s22_e6_i16_o24"))
    assert small.included == () and small.activations == ("silu",)
    # listed explicitly, a network that does not fit is an error naming it and why
    with pytest.raises(ValueError, match=r"space.include: mnasnet-a1 cannot be a point .*stage 3: kernel 5"):
        SearchSpace(kernels=(3,), include=["mnasnet-a1"])
    with pytest.raises(ValueError, match=r"head 1408 is not in the space \(valid: \[1280\]\)"):
        SearchSpace(include=[b0.replace(head=1408)])
    with pytest.raises(ValueError, match="space.include"):
        SearchSpace(include=[3])


# -- the pooling skip op -----------------------------------------------------------------------


def test_pool_skip_choice_samples_and_inverts(random_trial):
    space = SearchSpace.from_config({"skips": ["identity", "none", "pool"]}, num_classes=10,
                                    in_channels=1, resolution=32)
    assert all(st.skips == ("identity", "none", "pool") for st in space.stages)
    assert space.assignments == default_space().assignments // 2 ** 7 * 3 ** 7  # one more per stage
    seen = set()
    for seed in range(100):
        t = random_trial(seed)
        spec = space.sample(t)
        assert space.params_of(spec) == t.params
        assert space.sample(FixedTrial(t.params)) == spec
        assert ArchSpec.from_string(spec.to_string()) == spec
        for i, s in enumerate(spec.stages, start=1):
            seen.add(s.skip)
            assert s.skip == t.params[f"s{i}_skip"]
            assert s.pool_skip == (s.skip == "pool") and s.id_skip == (s.skip != "none")
    assert seen == {"identity", "none", "pool"}
    with pytest.raises(ValueError, match="stage 1: skip 'pool'"):
        default_space().params_of(ArchSpec.from_string(
            reference_spec("efficientnet-b0").to_string().replace("o16_se0.25", "o16_se0.25_poolskip")))


# -- distinct networks: the count against brute force ------------------------------------------


def _brute_force(space: SearchSpace) -> tuple[int, int]:
    specs = [spec for spec, _ in _enumerate(space)]
    return len(specs), len({s.network_key() for s in specs})


@pytest.mark.parametrize("base,options,expected", [
    # stride 2 then stride 1: skip collapses on one-layer stages, pool == identity where shapes
    # are kept, and a stage-2 layer of stage 1's width and type merges with stage 1's repeats
    ("stem=16 r1_k3_s22_e6_i16_o24 r1_k3_s11_e6_i24_o24",
     {"ops": ("mbconv", "conv"), "expand_ratios": (1, 3), "kernels": (3, 5), "se_ratios": (0.0, 0.25),
      "skips": ("identity", "none", "pool"), "filter_multipliers": (0.75, 1.0), "layer_deltas": (0, 1, 2)},
     (11_664, 6_768)),
    # three stride-1 stages of one width: a run of identical layers split three ways
    ("stem=16 r1_k3_s11_e3_i16_o16 r1_k3_s11_e3_i16_o16 r1_k3_s11_e3_i16_o16",
     {"ops": ("mbconv", "conv"), "expand_ratios": (3,), "kernels": (3,), "se_ratios": (0.0,),
      "skips": ("identity", "none", "pool"), "filter_multipliers": (0.5, 1.0), "layer_deltas": (0, 1)},
     (13_824, 5_382)),
    # fractional expansions that give the same expanded width (int(8 * 3) == int(8 * 3.1))
    ("stem=8 r1_k3_s11_e3_i8_o8 r2_k3_s22_e3_i8_o16",
     {"ops": ("mbconv",), "expand_ratios": (3, 3.1, 6), "kernels": (3,), "se_ratios": (0.0, 0.25),
      "skips": ("identity", "none"), "filter_multipliers": (1.0, 2.0), "layer_deltas": (0, 1)},
     None),
])
def test_size_counts_distinct_networks(base, options, expected):
    space = SearchSpace(base=ArchSpec.from_string(base, head=16, num_classes=2, resolution=32),
                        include=[], **options)
    assignments, networks = _brute_force(space)
    assert (assignments, networks) == (space.assignments, space.size)
    assert networks < assignments
    if expected is not None:
        assert (assignments, networks) == expected


def test_size_counts_distinct_networks_random_spaces():
    import random

    rng = random.Random(7)
    checked = 0
    while checked < 12:
        prev, tokens = 16, []
        for _ in range(rng.randint(2, 3)):
            s, w = rng.choice([1, 1, 2]), rng.choice([8, 16])
            tokens.append(f"r{rng.randint(1, 2)}_k3_s{s}{s}_e6_i{prev}_o{w}")
            prev = w
        space = SearchSpace(
            base=ArchSpec.from_string(" ".join(tokens), stem=16, head=16, num_classes=2, resolution=32),
            ops=tuple(rng.sample(["mbconv", "conv"], rng.randint(1, 2))),
            expand_ratios=tuple(rng.sample([1, 3, 3.1], 2)), kernels=(3,),
            se_ratios=rng.choice([(0.0,), (0.0, 0.25)]),
            skips=tuple(rng.sample(["identity", "none", "pool"], rng.randint(1, 3))),
            filter_multipliers=tuple(rng.sample([0.5, 1.0, 1.5], 2)),
            layer_deltas=tuple(rng.sample([-1, 0, 1], 2)) if "r2" in " ".join(tokens) else (0, 1),
            include=[])
        if space.assignments > 20_000:
            continue
        assert _brute_force(space) == (space.assignments, space.size), space
        checked += 1


def test_stem_and_head_widths_as_choices():
    """``stem_multipliers`` / ``head_multipliers``: global width choices, asked only when there is
    more than one (the default space's parameters are unchanged); counted, sampled and inverted
    like every other choice."""
    base = ArchSpec.from_string("stem=16 r1_k3_s22_e6_i16_o24 r1_k3_s11_e6_i24_o24", head=64, num_classes=2,
                                resolution=32)
    space = SearchSpace(base=base, ops=("mbconv", "conv"), expand_ratios=(3,), kernels=(3,), se_ratios=(0.0,),
                        filter_multipliers=(1.0,), layer_deltas=(0, 1), stem_multipliers=(0.5, 1.0),
                        head_multipliers=(0.5, 0.75, 1.0), include=[])
    assert space.stems == (8, 16) and space.heads == (32, 48, 64)
    assert space.param_names()[0] == "stem" and space.param_names()[-2:] == ["head", "activation"]
    assert _brute_force(space) == (space.assignments, space.size)
    plain = SearchSpace(base=base, ops=("mbconv", "conv"), expand_ratios=(3,), kernels=(3,), se_ratios=(0.0,),
                        filter_multipliers=(1.0,), layer_deltas=(0, 1), include=[])
    assert space.assignments == plain.assignments * 2 * 3
    assert space.size == plain.size * 2 * 3  # another stem or head is always another network
    for spec, params in _enumerate(space):
        assert space.params_of(spec) == params
        assert spec.stem == params["stem"] == spec.stages[0].in_filters and spec.head == params["head"]
    # a width that is not a choice: one line naming it; snap maps it to the nearest
    with pytest.raises(ValueError, match=r"head 40 is not in the space \(valid: \[32, 48, 64\]\)"):
        space.params_of(base.replace(head=40))
    odd = ArchSpec.from_string("stem=12 r1_k3_s22_e3_i12_o24 r1_k3_s11_e3_i24_o24", head=40, num_classes=2,
                               resolution=32)
    assert {k: v for k, v in space.params_of(odd, snap=True).items() if k in ("stem", "head")} == \
        {"stem": 8, "head": 32}
    # the default: one stem and one head, no parameters for them
    assert "head" not in default_space().param_names() and default_space().heads == (1280,)
    # one multiplier other than 1: not a choice, but every network has that width
    narrow = SearchSpace(base=base, head_multipliers=(0.5,), stem_multipliers=(0.5,), include=[])
    spec, _ = next(_enumerate(narrow))
    assert (spec.stem, spec.head, spec.stages[0].in_filters) == (8, 32, 8) and "head" not in narrow.param_names()
    with pytest.raises(ValueError, match="space.head_multipliers: each must be > 0"):
        SearchSpace(head_multipliers=(0.0, 1.0))


def test_default_space_with_head_choices_keeps_the_warm_starts():
    """B0's 1,280 head (multiplier 1.0) stays a choice, so the published networks stay points."""
    space = SearchSpace.from_config({"head_multipliers": [0.5, 0.75, 1.0], "stem_multipliers": [0.75, 1.0]},
                                    num_classes=10, in_channels=1, resolution=32)
    assert space.heads == (640, 960, 1280) and space.stems == (24, 32)
    b0 = reference_spec("efficientnet-b0", num_classes=10, in_channels=1).replace(resolution=32)
    assert space.sample(FixedTrial(space.params_of(b0))) == b0
    assert len(space.included) == 2
