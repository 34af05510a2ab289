"""What the supernet tests share: a small space, random images and a tiny recipe (``TOY``: code,
so that a racing subprocess can build the same), and the ``toy`` fixture that runs it."""

from __future__ import annotations

import pytest

# What each test (and each racing process) builds: a small space, random images, a tiny recipe.
TOY = r'''
import torch
from effnas.data import DataSplits, ImageDataset
from effnas.protocol import data_identity
from effnas.supernet import SupernetConfig
from effnas.train import ProxyConfig
from search_space import SearchSpace

torch.set_num_threads(1)
SPACE = SearchSpace.from_config({"expand_ratios": [1, 3], "layer_deltas": [-1, 0], "filter_multipliers": [0.75, 1.0]},
                                num_classes=10, in_channels=1, resolution=32)
PROXY = ProxyConfig(batch_size=8, train_size=24, minival_size=16, threads=1)
SUPERNET = SupernetConfig(epochs=2, train_size=24, random_subnets=1, recalibrate_batches=1, eval_size=16)


def toy_data(seed=0):
    g = torch.Generator().manual_seed(seed)
    def part(n):
        return ImageDataset(torch.randint(0, 256, (n, 1, 32, 32), dtype=torch.uint8, generator=g),
                            torch.randint(0, 10, (n,), generator=g), tuple(str(i) for i in range(10)), "toy")
    return DataSplits(part(24), part(16), None, (0.5,), (0.25,), "toy")


def identity(data, proxy=PROXY, supernet=SUPERNET, space=SPACE, seed=0):
    from effnas.supernet.cache import supernet_identity
    return supernet_identity({**data_identity({"name": "toy", "root": None}, data), "split_seed": seed},
                             space, proxy, supernet, seed)
'''


@pytest.fixture(scope="module")
def toy() -> dict:
    ns: dict = {}
    exec(TOY, ns)
    return ns
