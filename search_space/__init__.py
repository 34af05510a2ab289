"""effnas search space: what an architecture is, what it costs, how it is built and scaled.

Everything except :mod:`search_space.model` is torch-free; ``build_model`` and
``count_flops_fvcore`` import torch lazily on first use.
"""

from .costs import LayerCost, cost_breakdown, count_flops, count_params
from .references import reference_names, reference_spec
from .scaling import round_filters, round_repeats, scale_resolution, scale_spec
from .space import SearchSpace, StageChoices, default_space
from .resolve import ResolvedArch, reference_key, resolve_arch
from .spec import (Activation, ArchSpec, BlockSpec, ConvType, decode_arch, decode_block, encode_arch, encode_block,
                   to_timm_arch_def)

__all__ = [
    "Activation", "ArchSpec", "BlockSpec", "ConvType", "LayerCost", "SearchSpace", "StageChoices",
    "build_model", "cost_breakdown", "count_flops", "count_flops_fvcore",
    "count_params", "decode_arch", "decode_block", "default_space", "encode_arch", "encode_block",
    "reference_key", "reference_names", "reference_spec", "resolve_arch", "ResolvedArch", "round_filters", "round_repeats", "scale_resolution",
    "scale_spec", "to_timm_arch_def",
]


def __getattr__(name: str):  # lazy torch import
    if name in ("build_model", "count_flops_fvcore"):
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module 'search_space' has no attribute {name!r}")
