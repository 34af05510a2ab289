"""Published architectures: parameter counts against efficientnet-pytorch and the paper tables."""

from __future__ import annotations

import pytest

from search_space import count_flops, count_params, reference_names, reference_spec

# REFERENCE.md: (width, depth, resolution, dropout, params with 1000 classes, paper FLOPs)
TABLE = {
    "efficientnet-b0": (1.0, 1.0, 224, 0.2, 5_288_548, 0.39e9),
    "efficientnet-b1": (1.0, 1.1, 240, 0.2, 7_794_184, 0.70e9),
    "efficientnet-b2": (1.1, 1.2, 260, 0.3, 9_109_994, 1.0e9),
    "efficientnet-b3": (1.2, 1.4, 300, 0.3, 12_233_232, 1.8e9),
    "efficientnet-b4": (1.4, 1.8, 380, 0.4, 19_341_616, 4.2e9),
    "efficientnet-b5": (1.6, 2.2, 456, 0.4, 30_389_784, 9.9e9),
    "efficientnet-b6": (1.8, 2.6, 528, 0.5, 43_040_704, 19e9),
    "efficientnet-b7": (2.0, 3.1, 600, 0.5, 66_347_960, 37e9),
}
EFFICIENTNETS = list(TABLE)


def test_reference_names():
    assert reference_names() == EFFICIENTNETS + ["mnasnet-a1", "mobilenetv2"]


@pytest.mark.parametrize("name", EFFICIENTNETS)
def test_param_count_equals_built_model_and_efficientnet_pytorch(name, our_model, official_model,
                                                                 count_module_params):
    spec = reference_spec(name)
    expected = TABLE[name][4]
    assert count_params(spec) == expected
    assert count_module_params(our_model(name)) == expected
    assert count_module_params(official_model(name)) == expected


@pytest.mark.parametrize("name", EFFICIENTNETS)
def test_published_row(name):
    width, depth, res, dropout, _, _ = TABLE[name]
    spec = reference_spec(name)
    assert spec.resolution == res and spec.dropout == dropout
    assert spec.drop_connect == 0.2 and spec.activation.value == "silu"
    assert (spec.num_classes, spec.in_channels) == (1000, 3)


@pytest.mark.parametrize("name", EFFICIENTNETS)
def test_flops_within_5_percent_of_paper(name):
    *_, paper = TABLE[name]
    flops = count_flops(reference_spec(name))
    assert abs(flops - paper) / paper < 0.05, (name, flops / 1e9)


def test_b0_flops_exact():
    # fvcore on efficientnet-pytorch B0 (REFERENCE.md): conv 384.5M + linear 1.28M
    assert count_flops(reference_spec("efficientnet-b0")) == 385_814_752


def test_mobilenetv2_matches_torchvision():
    spec = reference_spec("mobilenetv2")
    assert count_params(spec) == 3_504_872  # torchvision mobilenet_v2
    assert abs(count_flops(spec) - 300.77e6) / 300.77e6 < 0.001  # 300.77M MACs
    assert spec.activation.value == "relu6"


def test_mnasnet_a1_matches_paper():
    spec = reference_spec("mnasnet-a1")
    assert abs(count_params(spec) - 3.9e6) / 3.9e6 < 0.01  # paper Table 1: 3.9M params
    assert abs(count_flops(spec) - 312e6) / 312e6 < 0.01  # 312M multiply-adds
    assert spec.activation.value == "relu"
    assert not spec.stages[0].id_skip
    # exactly timm's semnasnet_100 (REFERENCE.md, checked against timm 1.0.31)
    assert count_params(spec) == 3_887_038
    assert count_flops(spec, 224) == 311_579_072
    assert spec.drop_connect == 0.0 and spec.dropout == 0.2


def test_num_classes_and_in_channels(official_model):
    from efficientnet_pytorch import EfficientNet

    spec = reference_spec("efficientnet-b0", num_classes=10, in_channels=1)
    assert (spec.num_classes, spec.in_channels) == (10, 1)
    official = EfficientNet.from_name("efficientnet-b0", num_classes=10, in_channels=1)
    assert count_params(spec) == sum(p.numel() for p in official.parameters())
    base = count_params(reference_spec("efficientnet-b0"))
    # classifier 1280*(1000-10) + (1000-10) fewer, stem 2*3*3*32 fewer
    assert base - count_params(spec) == 1281 * 990 + 2 * 9 * 32
    for name in reference_names():
        s = reference_spec(name, num_classes=7, in_channels=4)
        assert (s.num_classes, s.in_channels) == (7, 4)


@pytest.mark.parametrize("name", ["EfficientNet-B0", "efficientnet_b0", "MNASNET_A1"])
def test_name_normalisation(name):
    assert reference_spec(name) == reference_spec(name.lower().replace("_", "-"))


@pytest.mark.parametrize("name", ["efficientnet-b8", "resnet50", "", None, 3])
def test_unknown_reference(name):
    with pytest.raises(ValueError) as info:
        reference_spec(name)  # type: ignore[arg-type]
    assert repr(name) in str(info.value)
    assert "efficientnet-b0" in str(info.value)  # lists the valid names
