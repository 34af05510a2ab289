"""The factorized hierarchical search space: membership of published nets, size, sampling."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.samplers import RandomSampler
from optuna.trial import FixedTrial

from search_space import (ArchSpec, ConvType, SearchSpace, default_space, reference_spec,
                          round_filters)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_efficientnet_b0_is_a_point():
    space = default_space()
    b0 = reference_spec("efficientnet-b0")
    params = space.params_of(b0)
    assert space.sample(FixedTrial(params)) == b0
    assert params["s1_op"] == "mbconv" and params["s1_expand"] == 1  # ds = MBConv e1
    assert {params[f"s{i}_expand"] for i in range(2, 8)} == {6}
    assert all(params[f"s{i}_layers"] == 0 for i in range(1, 8))


def test_mnasnet_a1_snapped_is_a_point():
    space = default_space()
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
        default_space().params_of(reference_spec("mnasnet-a1"))
    msg = str(info.value)
    assert "stage 6" in msg and "160" in msg and "144" in msg


def _edit(old: str, new: str):
    return lambda s: ArchSpec.from_string(s.to_string().replace(old, new))


@pytest.mark.parametrize("change,fragment", [
    (lambda s: s.replace(activation="relu"), "activation"),
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
        (16, 24), (24, 32), (32, 40, 48), (64, 80, 104), (88, 112, 144), (144, 192, 240),
        (240, 320, 400)]
    for st in stages:
        assert st.widths == tuple(sorted({round_filters(st.base.out_filters, m)
                                          for m in (0.75, 1.0, 1.25)}))
        # a delta that would empty a stage is dropped, not clamped
        assert st.layer_deltas == ((0, 1) if st.base.repeats == 1 else (-1, 0, 1))
        assert st.op_variants == 4  # conv, ds (= mbconv e1), mbconv e3, mbconv e6
    assert [st.size for st in stages] == [128, 192, 288, 288, 288, 288, 192]
    assert space.size == math.prod(st.size for st in stages) == 128 * 192 ** 2 * 288 ** 4
    assert space.param_names()[:7] == ["s1_op", "s1_expand", "s1_kernel", "s1_se", "s1_skip",
                                       "s1_filters", "s1_layers"]
    assert len(space.param_names()) == 49


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
    strings, count = set(), 0
    for i, (spec, params) in enumerate(_enumerate(space)):
        count += 1
        strings.add(spec.to_string())
        if i % 97 == 0:
            assert space.params_of(spec) == params
    assert count == space.size == 144 * 192
    assert len(strings) == space.size  # every assignment is a different architecture


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
    ({"skips": ["identity", "pool"]}, "pool"),
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
