"""Shared helpers for the search_space tests (fixtures, since test files are not a package)."""

from __future__ import annotations

import functools
import random
import warnings

import pytest

with warnings.catch_warnings():
    # fvcore.nn runs torch.jit.script at import time, which torch 2.13 deprecates
    warnings.simplefilter("ignore", DeprecationWarning)
    import fvcore.nn  # noqa: F401

from search_space import (Activation, ArchSpec, BlockSpec, ConvType, build_model,
                          reference_spec)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(one_thread_per_module):
    """Every module here on one torch thread (tests/conftest.py says why)."""


class RandomTrial:
    """The part of an optuna Trial that ``SearchSpace.sample`` uses, driven by ``random.Random``."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.params: dict = {}

    def suggest_categorical(self, name, choices):
        assert name not in self.params, f"{name} suggested twice"
        choices = list(choices)
        assert choices and len(set(map(repr, choices))) == len(choices), choices
        value = self.rng.choice(choices)
        self.params[name] = value
        return value


@pytest.fixture(scope="session")
def random_trial():
    return RandomTrial


def _random_arch(rng: random.Random) -> ArchSpec:
    """A random valid spec *outside* the default space: fractional expansions, kernels 1..7,
    any strides, odd SE ratios, small stems/heads, every activation."""
    stem = rng.choice([8, 16, 24, 32])
    prev, stages = stem, []
    for _ in range(rng.randint(1, 5)):
        conv_type = rng.choice(list(ConvType))
        expand = rng.choice([2, 2.5, 3, 4.5, 6, 8 / 3]) if conv_type is ConvType.MBCONV else 1
        out = rng.choice([8, 12, 16, 24, 40])
        stages.append(BlockSpec(repeats=rng.randint(1, 3), kernel=rng.choice([1, 3, 5, 7]),
                                stride=rng.choice([1, 2]), expand_ratio=expand, in_filters=prev,
                                out_filters=out,
                                se_ratio=rng.choice([0.0, 0.1, 0.25, 0.5, 1.0, 0.0625, 1 / 3]),
                                id_skip=rng.random() < 0.7, conv_type=conv_type))
        prev = out
    return ArchSpec(tuple(stages), stem=stem, head=rng.choice([16, 64, 100]),
                    num_classes=rng.randint(1, 50), in_channels=rng.randint(1, 4),
                    resolution=rng.randint(32, 128), dropout=rng.choice([0.0, 0.1, 0.3, 1 / 3]),
                    drop_connect=rng.choice([0.0, 0.2, 0.123456789]),
                    activation=rng.choice(list(Activation)))


@pytest.fixture(scope="session")
def random_arch():
    """``random_arch(seed) -> ArchSpec`` (off-space random specs)."""
    return lambda seed: _random_arch(random.Random(seed))


@functools.lru_cache(maxsize=None)
def _our_model(name: str):
    return build_model(reference_spec(name)).eval()


@functools.lru_cache(maxsize=None)
def _official_model(name: str):
    from efficientnet_pytorch import EfficientNet

    model = EfficientNet.from_name(name)
    model.set_swish(memory_efficient=False)  # traceable by fvcore
    return model.eval()


@pytest.fixture(scope="session")
def our_model():
    """``our_model(reference_name)``: built once per session, in eval mode (do not train it)."""
    return _our_model


@pytest.fixture(scope="session")
def official_model():
    """``official_model("efficientnet-bK")``: efficientnet_pytorch's model, built once, eval."""
    return _official_model


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="session")
def count_module_params():
    return n_params
