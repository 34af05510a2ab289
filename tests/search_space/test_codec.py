"""Architecture strings: official block strings, round trips, errors, timm arch_def."""

from __future__ import annotations

import json
import random

import pytest

from search_space import (ArchSpec, BlockSpec, ConvType, decode_arch, decode_block, default_space,
                          encode_block, reference_names, reference_spec, to_timm_arch_def)

# Typed in literally from REFERENCE.md (not imported from search_space.references).
B0_OFFICIAL = """
r1_k3_s11_e1_i32_o16_se0.25   r2_k3_s22_e6_i16_o24_se0.25   r2_k5_s22_e6_i24_o40_se0.25
r3_k3_s22_e6_i40_o80_se0.25   r3_k5_s11_e6_i80_o112_se0.25  r4_k5_s22_e6_i112_o192_se0.25
r1_k3_s11_e6_i192_o320_se0.25
"""
MNASNET_A1_OFFICIAL = """
r1_k3_s11_e1_i32_o16_noskip  r2_k3_s22_e6_i16_o24  r3_k5_s22_e3_i24_o40_se0.25  r4_k3_s22_e6_i40_o80
r2_k3_s11_e6_i80_o112_se0.25 r3_k5_s22_e6_i112_o160_se0.25 r1_k3_s11_e6_i160_o320
"""


def _random_variant(spec: ArchSpec, rng: random.Random) -> ArchSpec:
    return spec.replace(num_classes=rng.randint(1, 5000), in_channels=rng.randint(1, 16),
                        resolution=rng.randint(32, 1024),
                        dropout=rng.choice([0.0, 0.2, 0.5, rng.random() * 0.99, 1e-5]),
                        drop_connect=rng.choice([0.0, 0.2, rng.random() * 0.99]),
                        activation=rng.choice(["silu", "relu", "relu6"]))


def _assert_round_trips(spec: ArchSpec) -> None:
    text = spec.to_string()
    back = ArchSpec.from_string(text)
    assert back == spec, text
    assert back.to_string() == text  # one canonical form
    data = spec.to_dict()
    assert ArchSpec.from_dict(data) == spec
    via_json = json.loads(json.dumps(data))
    assert via_json == data
    assert ArchSpec.from_dict(via_json) == spec


@pytest.mark.parametrize("name", reference_names())
def test_references_round_trip(name):
    spec = reference_spec(name)
    _assert_round_trips(spec)
    _assert_round_trips(reference_spec(name, num_classes=10, in_channels=1))


def test_random_space_specs_round_trip(random_trial):
    space = default_space()
    rng = random.Random(1234)
    seen = set()
    for seed in range(200):
        spec = space.sample(random_trial(seed))
        if seed % 2:
            spec = _random_variant(spec, rng)
        _assert_round_trips(spec)
        seen.add(spec.to_string())
    assert len(seen) == 200  # the samples really differ


def test_random_off_space_specs_round_trip(random_arch):
    for seed in range(200):
        _assert_round_trips(random_arch(seed))


def test_poolskip_token_round_trips(random_trial):
    block = decode_block("r2_k5_s22_e6_i16_o24_se0.25_poolskip")
    assert block.pool_skip and block.id_skip and block.skip == "pool"
    assert encode_block(block) == "r2_k5_s22_e6_i16_o24_se0.25_poolskip"
    assert not decode_block("r2_k5_s22_e6_i16_o24").pool_skip
    conv = decode_block("r1_k3_s11_e1_i16_o8_c1_poolskip")
    assert conv.conv_type is ConvType.CONV and conv.pool_skip
    space = default_space().__class__(skips=("identity", "none", "pool"))
    for seed in range(100):
        _assert_round_trips(space.sample(random_trial(seed)))
    data = reference_spec("efficientnet-b0").to_dict()
    for stage in data["stages"]:  # a dict written before pool_skip existed still loads
        assert stage.pop("pool_skip") is False
    assert ArchSpec.from_dict(data) == reference_spec("efficientnet-b0")


def test_to_string_layout():
    text = reference_spec("efficientnet-b0").to_string()
    assert text == (
        "stem=32 r1_k3_s11_e1_i32_o16_se0.25 r2_k3_s22_e6_i16_o24_se0.25 "
        "r2_k5_s22_e6_i24_o40_se0.25 r3_k3_s22_e6_i40_o80_se0.25 r3_k5_s11_e6_i80_o112_se0.25 "
        "r4_k5_s22_e6_i112_o192_se0.25 r1_k3_s11_e6_i192_o320_se0.25 head=1280 classes=1000 "
        "channels=3 res=224 dropout=0.2 drop_connect=0.2 act=silu")


def test_official_b0_string_parses_to_reference():
    spec = ArchSpec.from_string(B0_OFFICIAL)
    ref = reference_spec("efficientnet-b0")
    assert spec.stages == ref.stages
    assert spec.stem == 32  # taken from the first block
    assert spec == ref  # the rest are the dataclass defaults, which are B0's
    assert [s.conv_type for s in spec.stages] == [ConvType.DS] + [ConvType.MBCONV] * 6
    assert all(s.se_ratio == 0.25 and s.id_skip for s in spec.stages)
    assert [(s.repeats, s.kernel, s.stride, s.expand_ratio, s.in_filters, s.out_filters)
            for s in spec.stages] == [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24),
                                      (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                                      (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192),
                                      (1, 3, 1, 6, 192, 320)]


def test_official_mnasnet_string_parses_to_reference():
    spec = ArchSpec.from_string(MNASNET_A1_OFFICIAL)
    ref = reference_spec("mnasnet-a1")
    assert spec.stages == ref.stages
    assert [(s.repeats, s.kernel, s.stride, s.expand_ratio, s.in_filters, s.out_filters,
             s.se_ratio, s.id_skip) for s in spec.stages] == [
        (1, 3, 1, 1, 32, 16, 0.0, False), (2, 3, 2, 6, 16, 24, 0.0, True),
        (3, 5, 2, 3, 24, 40, 0.25, True), (4, 3, 2, 6, 40, 80, 0.0, True),
        (2, 3, 1, 6, 80, 112, 0.25, True), (3, 5, 2, 6, 112, 160, 0.25, True),
        (1, 3, 1, 6, 160, 320, 0.0, True)]
    assert spec.stages[0].conv_type is ConvType.DS
    # fields not in block strings come from keyword defaults
    named = ArchSpec.from_string(MNASNET_A1_OFFICIAL, activation="relu", drop_connect=0.0)
    assert named == ref


def test_block_codec():
    block = decode_block("r2_k5_s22_e3_i24_o40_se0.25_noskip")
    assert block == BlockSpec(2, 5, 2, 3, 24, 40, 0.25, False, ConvType.MBCONV)
    assert encode_block(block) == "r2_k5_s22_e3_i24_o40_se0.25_noskip"
    # option order does not matter; a single stride digit is accepted as in the official decoder
    assert decode_block("o40_i24_se0.25_noskip_e3_s2_k5_r2") == block
    conv = decode_block("r1_k3_s11_e1_i8_o16_c1")
    assert conv.conv_type is ConvType.CONV and encode_block(conv) == "r1_k3_s11_e1_i8_o16_c1"
    assert decode_block("r1_k3_s11_e1_i8_o16_c0").conv_type is ConvType.DS
    assert decode_block("r1_k3_s11_e2.5_i8_o16").expand_ratio == 2.5
    assert decode_block("r1_k3_s11_e6.0_i8_o16") == decode_block("r1_k3_s11_e6_i8_o16")


def test_key_value_tokens_anywhere_and_commas():
    text = "res=64 r1_k3_s11_e1_i32_o16_se0.25, classes=10 r2_k3_s22_e6_i16_o24 act=relu"
    spec = decode_arch(text)
    assert (spec.resolution, spec.num_classes, spec.activation.value, spec.stem) == (
        64, 10, "relu", 32)
    assert len(spec.stages) == 2
    # explicit tokens beat keyword defaults
    assert decode_arch(text, num_classes=3, in_channels=1).num_classes == 10
    assert decode_arch(text, num_classes=3, in_channels=1).in_channels == 1


def test_bad_defaults_raise_value_error():
    with pytest.raises(ValueError, match="bogus"):
        decode_arch(B0_OFFICIAL, bogus=1)
    with pytest.raises(ValueError, match="resolution"):
        decode_arch(B0_OFFICIAL, resolution=8)


B1 = "r1_k3_s11_e1_i32_o16"
B2 = "r2_k3_s22_e6_i16_o24"
MALFORMED = [
    # (string, fragment the message must contain)
    ("", "empty"),
    ("   \n ", "empty"),
    (",,", "empty"),
    ("r1_k3_s11_e1_i32_o16_x5", "'x5'"),                       # bad option
    ("r1_k3_s11_e1_i32_o16_se0.25_dw", "'dw'"),                # bad option
    ("R1_k3_s11_e1_i32_o16", "'R1'"),                          # bad option (case)
    ("r1_k3_s11_e1_i32", "missing option(s) o"),               # missing option
    ("k3_s11_e1_i32_o16", "missing option(s) r"),              # missing option
    ("r1_k4_s11_e1_i32_o16", "got 4"),                         # even kernel
    ("r1_k0_s11_e1_i32_o16", "got 0"),                         # kernel 0
    ("r1_k3_s33_e1_i32_o16", "got 3"),                         # stride 3
    ("r1_k3_s12_e1_i32_o16", "s12"),                           # asymmetric stride
    ("r1_k3_s111_e1_i32_o16", "'111'"),                        # too many stride digits
    ("r1_k3_s11_e1_i32_o16_se1.5", "1.5"),                     # se outside [0, 1]
    ("r1_k3_s11_e1_i32_o16_se", "''"),                         # se without value
    ("r1_k3_s11_e1_i32_o16_se-0.1", "'-0.1'"),                 # negative se
    ("r1_k3_s11_e1_i32_o16_senan", "'nan'"),                   # non-numeric se
    (f"{B1} r2_k3_s22_e6_i24_o24", "stages[1].in_filters=24"), # channel mismatch
    (f"stem=16 {B1}", "stem=16"),                              # channel mismatch with stem
    (f"foo=3 {B1}", "'foo'"),                                  # unknown key=
    (f"=5 {B1}", "'=5'"),                                      # empty key
    (f"head=64 {B1} head=128", "'head' given twice"),          # duplicate key
    (f"{B1} classes=ten", "'ten'"),                            # non-numeric key value
    (f"{B1} res=2.5", "'2.5'"),                                # non-integer res
    (f"{B1} res=16", "16"),                                    # res < 32
    (f"{B1} dropout=abc", "'abc'"),                            # non-numeric dropout
    (f"{B1} dropout=1", "dropout"),                            # dropout 1.0
    (f"{B1} act=gelu", "act=gelu"),                            # unknown activation
    ("stem=32 head=1280", "no block strings"),                 # only key=value
    ("rX_k3_s11_e1_i32_o16", "'X'"),                           # non-numeric repeats
    ("r1.5_k3_s11_e1_i32_o16", "'1.5'"),                       # fractional repeats
    ("r1_k-3_s11_e1_i32_o16", "'-3'"),                         # negative kernel
    ("r1_k3_s11_eabc_i32_o16", "'abc'"),                       # non-numeric expand
    ("r1_k3_s11_e0.5_i32_o16", "0.5"),                         # expand < 1
    ("r1_k3_sxx_e1_i32_o16", "'xx'"),                          # non-numeric stride
    ("r1_k3_s11_e1_i32_oabc", "'abc'"),                        # non-numeric out
    ("r1_k3_s11_e1_i32_o16_noskip_noskip", "'noskip' given twice"),
    ("r1_k3_s11_e1_i32_o16_k5", "'k' given twice"),           # duplicate option
    ("r1_k3_s11_e1_i32_o16_se0.25_se0.5", "'se' given twice"),
    ("r1_k3_s11_e1_i32_o16_s22", "'s' given twice"),
    ("r1_k3_s11_e1_i32_o16_", "''"),                           # trailing underscore
    ("_r1_k3_s11_e1_i32_o16", "''"),                           # leading underscore
    ("r1__k3_s11_e1_i32_o16", "''"),                           # double underscore
    ("r0_k3_s11_e1_i32_o16", "repeats"),                       # zero repeats
    ("r1_k3_s11_e1_i0_o16", "in_filters"),                     # zero width
    ("r1_k3_s11_e6_i32_o16_c1", "expand_ratio"),               # conv with expansion
    ("r1_k3_s11_e1_i32_o16_c2", "c2"),                         # bad c
    ("r1_k3_s11_e1_i32_o16_noskip2", "'noskip2'"),             # noskip with junk
    ("r1_k3_s11_e1_i32_o16_poolskip_poolskip", "'poolskip' given twice"),
    ("r1_k3_s11_e1_i32_o16_noskip_poolskip", "'noskip' and 'poolskip'"),
    ("r1_k3_s11_e1_i32_o16_poolskip_noskip", "'noskip' and 'poolskip'"),
    ("r1_k3_s11_e1_i32_o16_pool", "'pool'"),                   # not the token
]


@pytest.mark.parametrize("text,fragment", MALFORMED, ids=[m[0] or "<empty>" for m in MALFORMED])
def test_malformed_strings_raise_value_error(text, fragment):
    with pytest.raises(Exception) as info:
        ArchSpec.from_string(text)
    assert type(info.value) is ValueError, repr(info.value)
    assert fragment in str(info.value), str(info.value)
    # a bad block token is named in full (a channel mismatch names the stages and widths instead)
    bad_blocks = [t for t in text.replace(",", " ").split() if "=" not in t and t not in (B1, B2)]
    if len(bad_blocks) == 1 and "mismatch" not in str(info.value):
        assert repr(bad_blocks[0]) in str(info.value), str(info.value)


@pytest.mark.parametrize("value", [None, 3, b"r1_k3_s11_e1_i32_o16", ["r1_k3_s11_e1_i32_o16"]])
def test_non_string_input_raises_value_error(value):
    with pytest.raises(ValueError):
        ArchSpec.from_string(value)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        decode_block(value if value is not None else "")  # type: ignore[arg-type]


@pytest.mark.parametrize("data,fragment", [
    ({}, "stages"),
    ([], "stages"),
    ({"stages": [], "bogus": 1}, "bogus"),
    ({"stages": None}, "stages"),
    ({"stages": [{"repeats": 1}]}, "stages[0]"),
    ({"stages": [{"kernel_size": 3}]}, "stages[0]"),
    ({"stages": ["r1_k3_s11_e1_i32_o16"]}, "stages[0]"),
])
def test_from_dict_errors(data, fragment):
    with pytest.raises(ValueError) as info:
        ArchSpec.from_dict(data)  # type: ignore[arg-type]
    assert fragment in str(info.value)


def test_to_timm_arch_def():
    assert to_timm_arch_def(reference_spec("efficientnet-b0")) == [
        ["ds_r1_k3_s1_e1_c16_se0.25"], ["ir_r2_k3_s2_e6_c24_se0.25"],
        ["ir_r2_k5_s2_e6_c40_se0.25"], ["ir_r3_k3_s2_e6_c80_se0.25"],
        ["ir_r3_k5_s1_e6_c112_se0.25"], ["ir_r4_k5_s2_e6_c192_se0.25"],
        ["ir_r1_k3_s1_e6_c320_se0.25"]]
    # timm's _gen_mnasnet_a1
    assert reference_spec("mnasnet-a1").to_timm_arch_def() == [
        ["ds_r1_k3_s1_e1_c16_noskip"], ["ir_r2_k3_s2_e6_c24"], ["ir_r3_k5_s2_e3_c40_se0.25"],
        ["ir_r4_k3_s2_e6_c80"], ["ir_r2_k3_s1_e6_c112_se0.25"], ["ir_r3_k5_s2_e6_c160_se0.25"],
        ["ir_r1_k3_s1_e6_c320"]]
    with pytest.raises(ValueError, match=r"stage 1 \(cn, se 0\.5\)"):  # timm's ConvBnAct has no SE
        ArchSpec.from_string("r1_k3_s22_e1_i32_o16_c1_se0.5 r2_k5_s11_e3_i16_o24").to_timm_arch_def()
    conv = ArchSpec.from_string("r1_k3_s22_e1_i32_o16_c1 r2_k5_s11_e3_i16_o24")
    assert conv.to_timm_arch_def() == [["cn_r1_k3_s2_c16_skip"], ["ir_r2_k5_s1_e3_c24"]]
