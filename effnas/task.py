"""The task every candidate is trained on: a dataset's splits at one resolution, from the
``dataset`` and ``proxy`` config groups, loaded once per resolution and process."""

from __future__ import annotations

import dataclasses
from typing import Any

from .data import DataSplits, TestSplit, load_splits
from .train import ProxyConfig, resolve_device

__all__ = ["load_data", "DataCache"]


def load_data(dataset: Any, proxy: ProxyConfig, seed: int, resolution: int | None = None,
              test: TestSplit = False) -> DataSplits:
    """Train (``proxy.train_size``), minival (``proxy.minival_size``, held out of the training split)
    of ``dataset`` at ``resolution`` (default ``proxy.resolution``). The searches never look at the
    test split, so it is not read (``test=False``, ``DataSplits.test`` is None); ``nas-train`` asks
    for it (``test=True``, or ``"if_present"`` for datasets that may have none). The device is checked
    first: asking for CUDA where there is none is a one-line error before any data is read."""
    resolve_device(proxy.device)
    values = dataclasses.asdict(dataset) if dataclasses.is_dataclass(dataset) else dict(dataset)
    extra = {k: v for k, v in values.items() if k not in ("name", "root", "download", "flip") and v is not None}
    return load_splits(values["name"], values.get("root"), resolution=resolution or proxy.resolution,
                       minival_size=proxy.minival_size, train_size=proxy.train_size, seed=seed,
                       download=bool(values.get("download", False)), test=test, **extra)


class DataCache:
    """The task's data (train and minival: no test split) at every resolution a stage needs, loaded
    once per resolution."""

    def __init__(self, dataset: Any, proxy: ProxyConfig, seed: int) -> None:
        self.dataset, self.proxy, self.seed = dataset, proxy, seed
        self._splits: dict[int, DataSplits] = {}

    def at(self, resolution: int) -> DataSplits:
        if resolution not in self._splits:
            self._splits[resolution] = load_data(self.dataset, self.proxy, self.seed, resolution)
        return self._splits[resolution]
