"""ArchSpec / BlockSpec: validation, immutability, hashing, stage semantics."""

from __future__ import annotations

import dataclasses
import math

import pytest

from search_space import Activation, ArchSpec, BlockSpec, ConvType, reference_spec

BLOCK = dict(repeats=2, kernel=3, stride=2, expand_ratio=6, in_filters=16, out_filters=24,
             se_ratio=0.25, id_skip=True, conv_type="mbconv")


def b0() -> ArchSpec:
    return reference_spec("efficientnet-b0")


def _names_value(msg: str, field: str, value) -> bool:
    return field in msg and (repr(value) in msg or str(value) in msg)


# ---------------------------------------------------------------------------------------------
# BlockSpec


def test_valid_block_is_normalised():
    b = BlockSpec(**{**BLOCK, "expand_ratio": 6.0, "se_ratio": 0, "conv_type": "mbconv"})
    assert b.expand_ratio == 6 and type(b.expand_ratio) is int
    assert b.se_ratio == 0.0 and type(b.se_ratio) is float
    assert b.conv_type is ConvType.MBCONV
    assert not b.has_se
    assert BlockSpec(**{**BLOCK, "expand_ratio": 2.5}).expand_ratio == 2.5


BAD_BLOCK_FIELDS = [
    ("kernel", 4), ("kernel", 2), ("kernel", 0), ("kernel", -3), ("kernel", 3.0), ("kernel", True),
    ("kernel", "3"),
    ("stride", 3), ("stride", 0), ("stride", -1), ("stride", True), ("stride", 2.0),
    ("stride", "2"),
    ("in_filters", 0), ("in_filters", -16), ("in_filters", True), ("in_filters", 16.0),
    ("out_filters", 0), ("out_filters", -8), ("out_filters", 24.5),
    ("se_ratio", -0.1), ("se_ratio", 1.5), ("se_ratio", math.nan), ("se_ratio", math.inf),
    ("se_ratio", "0.25"), ("se_ratio", True),
    ("repeats", 0), ("repeats", -1), ("repeats", True), ("repeats", 1.5), ("repeats", None),
    ("expand_ratio", 0.5), ("expand_ratio", 0), ("expand_ratio", True), ("expand_ratio", math.inf),
    ("expand_ratio", math.nan), ("expand_ratio", "6"),
    ("conv_type", "sep"), ("conv_type", "MBConv"), ("conv_type", None),
    ("id_skip", 1), ("id_skip", "yes"), ("id_skip", None),
    ("pool_skip", 1), ("pool_skip", "yes"), ("pool_skip", None),
]


@pytest.mark.parametrize("field,value", BAD_BLOCK_FIELDS, ids=lambda v: repr(v))
def test_block_invalid_field_names_field_and_value(field, value):
    with pytest.raises(ValueError) as info:
        BlockSpec(**{**BLOCK, field: value})
    assert type(info.value) is ValueError
    assert _names_value(str(info.value), field, value), str(info.value)


@pytest.mark.parametrize("conv_type,expand,fragments", [
    ("mbconv", 1, ["expand_ratio", "1", "mbconv"]),
    ("mbconv", 1.0, ["expand_ratio", "1", "mbconv"]),
    ("ds", 6, ["expand_ratio", "6", "ds"]),
    ("ds", 3, ["expand_ratio", "3", "ds"]),
    ("conv", 6, ["expand_ratio", "6", "conv"]),
])
def test_block_op_expand_consistency(conv_type, expand, fragments):
    with pytest.raises(ValueError) as info:
        BlockSpec(**{**BLOCK, "conv_type": conv_type, "expand_ratio": expand})
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_block_ds_and_conv_with_expand_one_are_fine():
    assert BlockSpec(**{**BLOCK, "conv_type": "ds", "expand_ratio": 1}).conv_type is ConvType.DS
    assert BlockSpec(**{**BLOCK, "conv_type": "conv", "expand_ratio": 1}).conv_type is ConvType.CONV


def test_block_layers_follow_official_repeat_rule():
    b = BlockSpec(**{**BLOCK, "repeats": 3})
    assert b.layers() == [(16, 24, 2), (24, 24, 1), (24, 24, 1)]
    assert BlockSpec(**{**BLOCK, "repeats": 1}).layers() == [(16, 24, 2)]


def test_block_widths_and_residual():
    mb = BlockSpec(**BLOCK)
    assert mb.expanded(16) == 96 and mb.expanded(24) == 144
    assert mb.squeezed(16) == 4 and mb.squeezed(24) == 6  # relative to the block *input*
    assert BlockSpec(**{**BLOCK, "se_ratio": 0.01}).squeezed(16) == 1  # max(1, int(.))
    frac = BlockSpec(**{**BLOCK, "expand_ratio": 2.5})
    assert frac.expanded(13) == 32  # int(32.5), as the official code
    ds = BlockSpec(**{**BLOCK, "conv_type": "ds", "expand_ratio": 1})
    assert ds.expanded(16) == 16
    conv = BlockSpec(**{**BLOCK, "conv_type": "conv", "expand_ratio": 1})
    assert conv.expanded(16) == 24
    assert not mb.has_residual(16, 2)  # stride 2
    assert not mb.has_residual(16, 1)  # in != out
    assert mb.has_residual(24, 1)
    assert not BlockSpec(**{**BLOCK, "id_skip": False}).has_residual(24, 1)


def test_block_skip_ops_and_shortcuts():
    identity, none = BlockSpec(**BLOCK), BlockSpec(**{**BLOCK, "id_skip": False})
    pool = BlockSpec(**{**BLOCK, "pool_skip": True})
    assert (identity.skip, none.skip, pool.skip) == ("identity", "none", "pool")
    with pytest.raises(ValueError, match="pool_skip .* id_skip=True"):
        BlockSpec(**{**BLOCK, "id_skip": False, "pool_skip": True})
    # shape kept (stride 1, in == out): pool is the identity residual
    assert identity.shortcut(24, 1) == pool.shortcut(24, 1) == "identity" and none.shortcut(24, 1) is None
    assert pool.has_residual(24, 1)
    # stride 2 or a width change: only pool has a shortcut
    for cin, stride in ((16, 2), (24, 2), (16, 1), (40, 1)):
        assert identity.shortcut(cin, stride) is None and none.shortcut(cin, stride) is None
        assert pool.shortcut(cin, stride) == "pool" and not pool.has_residual(cin, stride)


def test_network_key_sees_computation_not_spelling():
    spec = b0()
    assert spec.network_key() == b0().network_key()
    # stage 1 (32 -> 16, one layer) can have no shortcut: its skip op changes the string only
    noskip = spec.replace(stages=(dataclasses.replace(spec.stages[0], id_skip=False),) + spec.stages[1:])
    assert noskip != spec and noskip.to_string() != spec.to_string()
    assert noskip.network_key() == spec.network_key()
    pooled = spec.replace(stages=(dataclasses.replace(spec.stages[0], pool_skip=True),) + spec.stages[1:])
    assert pooled.network_key() != spec.network_key()  # its one layer gets a pooled shortcut
    # a stride-1 stage of the previous stage's width and type extends its run: 2 + 1 == 1 + 2
    a = ArchSpec.from_string("stem=16 r2_k3_s22_e6_i16_o24 r1_k3_s11_e6_i24_o24", head=32)
    b = ArchSpec.from_string("stem=16 r1_k3_s22_e6_i16_o24 r2_k3_s11_e6_i24_o24", head=32)
    assert a != b and a.network_key() == b.network_key()
    assert a.network_key() != a.replace(activation="relu").network_key()
    assert a.network_key() != a.replace(drop_connect=0.0).network_key()  # other rates per block
    # expansions that give one expanded width are one network
    c = ArchSpec.from_string("stem=8 r1_k3_s11_e3_i8_o8", head=16)
    d = ArchSpec.from_string("stem=8 r1_k3_s11_e3.1_i8_o8", head=16)
    assert c != d and c.network_key() == d.network_key()


# ---------------------------------------------------------------------------------------------
# ArchSpec

BAD_ARCH_FIELDS = [
    ("stem", 0), ("stem", True), ("head", 0), ("head", -1280), ("head", 1280.0),
    ("num_classes", 0), ("num_classes", True), ("num_classes", "10"),
    ("in_channels", 0), ("in_channels", 3.0),
    ("resolution", 31), ("resolution", 16), ("resolution", 0), ("resolution", 224.0),
    ("resolution", True),
    ("dropout", 1.0), ("dropout", 1), ("dropout", 1.5), ("dropout", -0.1), ("dropout", True),
    ("dropout", "0.2"), ("dropout", math.nan),
    ("drop_connect", 1.0), ("drop_connect", -0.5), ("drop_connect", None),
    ("activation", "gelu"), ("activation", "SiLU"), ("activation", None),
]


@pytest.mark.parametrize("field,value", BAD_ARCH_FIELDS, ids=lambda v: repr(v))
def test_arch_invalid_field_names_field_and_value(field, value):
    with pytest.raises(ValueError) as info:
        b0().replace(**{field: value})
    assert type(info.value) is ValueError
    msg = str(info.value)
    if field == "stem":  # stem 0 / True fails its own check first
        assert "stem" in msg
    assert _names_value(msg, field, value) or (
        isinstance(value, (int, float)) and not isinstance(value, bool)
        and field in msg and repr(float(value)) in msg), msg


def test_arch_stem_channel_mismatch():
    with pytest.raises(ValueError) as info:
        b0().replace(stem=16)
    msg = str(info.value)
    assert "channel mismatch" in msg and "stem=16" in msg and "in_filters=32" in msg


def test_arch_channel_mismatch_between_stages():
    stages = list(b0().stages)
    stages[3] = dataclasses.replace(stages[3], in_filters=48)
    with pytest.raises(ValueError) as info:
        b0().replace(stages=tuple(stages))
    msg = str(info.value)
    assert "stages[3].in_filters=48" in msg and "stages[2].out_filters=40" in msg


@pytest.mark.parametrize("stages,fragment", [
    ((), "stages"), ([], "stages"), (None, "stages"),
    ((dict(BLOCK),), "stages[0]"), ("r1_k3_s11_e1_i32_o16", "stages"),
])
def test_arch_bad_stages(stages, fragment):
    with pytest.raises(ValueError) as info:
        ArchSpec(stages=stages)
    assert fragment in str(info.value)


def test_arch_normalises():
    spec = b0()
    again = ArchSpec(stages=list(spec.stages), activation="silu", dropout=0.2, drop_connect=0.2)
    assert again == spec and isinstance(again.stages, tuple)
    assert again.activation is Activation.SILU
    zero = spec.replace(dropout=0, drop_connect=0)
    assert type(zero.dropout) is float and type(zero.drop_connect) is float


def test_specs_are_frozen():
    spec = b0()
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.stem = 16  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.resolution = 300  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.stages[0].kernel = 5  # type: ignore[misc]
    assert spec == b0()


def test_specs_are_hashable_and_compare_by_value():
    a, b, b1 = b0(), b0(), reference_spec("efficientnet-b1")
    assert a is not b and a == b and hash(a) == hash(b)
    assert a != b1
    assert len({a, b, b1}) == 2
    assert {a: "x"}[b] == "x"
    assert hash(a.stages[0]) == hash(b.stages[0])
    assert a != a.replace(num_classes=10)
    assert a != a.replace(resolution=256)


def test_replace_is_pure_and_validated():
    spec = b0()
    other = spec.replace(num_classes=10)
    assert other.num_classes == 10 and spec.num_classes == 1000 and other is not spec
    with pytest.raises(ValueError, match="resolution"):
        spec.replace(resolution=16)


def test_convenience_properties():
    spec = b0()
    assert spec.num_blocks == 16
    assert spec.last_filters == 320
    assert [s.repeats for s in spec.stages] == [1, 2, 2, 3, 3, 4, 1]


def test_plain_layers_counts_the_layers_without_a_shortcut():
    # B0: the first layer of each of its 7 stages changes the width, so it has no residual; a
    # stage of 3 with its skip off adds its other 2; the pool skip gives the 7 first layers one
    spec = b0()
    assert spec.plain_layers == 7
    off = spec.replace(stages=tuple(dataclasses.replace(s, id_skip=False) if i == 3 else s for i, s in enumerate(spec.stages)))
    assert spec.stages[3].repeats == 3 and off.plain_layers == 9
    pooled = spec.replace(stages=tuple(dataclasses.replace(s, pool_skip=True) for s in spec.stages))
    assert pooled.plain_layers == 0
