"""Published architectures as specs: EfficientNet-B0..B7, MnasNet-A1, MobileNetV2.

B1..B7 are *not* a second table of widths: they are ``scale_spec(B0, width, depth)`` with the
published (width, depth, resolution, dropout) row, so the official rounding produces them.
"""

from __future__ import annotations

from .spec import decode_arch
from .scaling import scale_spec
from .spec import ArchSpec

__all__ = ["EFFICIENTNET_B0_BLOCKS", "MNASNET_A1_BLOCKS", "MOBILENETV2_BLOCKS", "EFFICIENTNET_PARAMS",
           "reference_spec", "reference_names"]

EFFICIENTNET_B0_BLOCKS = (
    "r1_k3_s11_e1_i32_o16_se0.25 r2_k3_s22_e6_i16_o24_se0.25 r2_k5_s22_e6_i24_o40_se0.25 "
    "r3_k3_s22_e6_i40_o80_se0.25 r3_k5_s11_e6_i80_o112_se0.25 r4_k5_s22_e6_i112_o192_se0.25 "
    "r1_k3_s11_e6_i192_o320_se0.25"
)
MNASNET_A1_BLOCKS = (
    "r1_k3_s11_e1_i32_o16_noskip r2_k3_s22_e6_i16_o24 r3_k5_s22_e3_i24_o40_se0.25 "
    "r4_k3_s22_e6_i40_o80 r2_k3_s11_e6_i80_o112_se0.25 r3_k5_s22_e6_i112_o160_se0.25 "
    "r1_k3_s11_e6_i160_o320"
)
MOBILENETV2_BLOCKS = (
    "r1_k3_s11_e1_i32_o16 r2_k3_s22_e6_i16_o24 r3_k3_s22_e6_i24_o32 r4_k3_s22_e6_i32_o64 "
    "r3_k3_s11_e6_i64_o96 r3_k3_s22_e6_i96_o160 r1_k3_s11_e6_i160_o320"
)

# name -> (width, depth, resolution, dropout): the published EfficientNet table.
EFFICIENTNET_PARAMS: dict[str, tuple[float, float, int, float]] = {
    "efficientnet-b0": (1.0, 1.0, 224, 0.2),
    "efficientnet-b1": (1.0, 1.1, 240, 0.2),
    "efficientnet-b2": (1.1, 1.2, 260, 0.3),
    "efficientnet-b3": (1.2, 1.4, 300, 0.3),
    "efficientnet-b4": (1.4, 1.8, 380, 0.4),
    "efficientnet-b5": (1.6, 2.2, 456, 0.4),
    "efficientnet-b6": (1.8, 2.6, 528, 0.5),
    "efficientnet-b7": (2.0, 3.1, 600, 0.5),
}


def reference_names() -> list[str]:
    return [*EFFICIENTNET_PARAMS, "mnasnet-a1", "mobilenetv2"]


def reference_spec(name: str, num_classes: int = 1000, in_channels: int = 3) -> ArchSpec:
    """A published architecture as a spec, with the given classifier and input channels."""
    key = name.lower().replace("_", "-") if isinstance(name, str) else name
    head = {"num_classes": num_classes, "in_channels": in_channels}
    if key in EFFICIENTNET_PARAMS:
        width, depth, res, dropout = EFFICIENTNET_PARAMS[key]
        b0 = decode_arch(EFFICIENTNET_B0_BLOCKS, stem=32, head=1280, resolution=224, dropout=0.2,
                         drop_connect=0.2, activation="silu", **head)
        return scale_spec(b0, width=width, depth=depth, resolution=res, dropout=dropout)
    if key == "mnasnet-a1":
        return decode_arch(MNASNET_A1_BLOCKS, stem=32, head=1280, resolution=224, dropout=0.2,
                           drop_connect=0.0, activation="relu", **head)
    if key == "mobilenetv2":
        return decode_arch(MOBILENETV2_BLOCKS, stem=32, head=1280, resolution=224, dropout=0.2,
                           drop_connect=0.0, activation="relu6", **head)
    raise ValueError(f"unknown reference architecture {name!r}; valid: {', '.join(reference_names())}")
