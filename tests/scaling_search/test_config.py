"""The stage-2 configs compose with every dataset / storage option and name every key."""

from __future__ import annotations

import pytest

import scaling_search.config  # noqa: F401 -- root schemas
from effnas.config import load
from effnas.train import ProxyConfig


@pytest.mark.parametrize("dataset", ["fashion_mnist", "mnist", "cifar10", "image_folder"])
@pytest.mark.parametrize("storage", ["journal", "sqlite", "postgres"])
def test_scale_search_config_composes(dataset, storage, monkeypatch):
    monkeypatch.setenv("EFFNAS_STORAGE_URL", "postgresql://u:p@127.0.0.1:1/db")
    root = [] if dataset == "fashion_mnist" else ["dataset.root=/data/x"]
    cfg = load("scale_search", [f"dataset={dataset}", f"storage={storage}", *root])
    assert cfg.dataset.name == dataset and cfg.storage.kind == storage
    assert cfg.base == "efficientnet-b0" and cfg.baselines is False
    assert (cfg.alpha, cfg.beta, cfg.gamma) == (None, None, None)
    grid = cfg.grid.spec()  # the defaults the issue asks for
    assert (grid.alpha, grid.beta, grid.gamma, grid.step, grid.tol, grid.mode) == \
        ((1.0, 1.5), (1.0, 1.3), (1.0, 1.3), 0.05, 0.1, "measured_flops")
    assert cfg.min_base_resolution == 48
    assert cfg.search.study_name == f"scale-{dataset}"
    assert isinstance(cfg.proxy, ProxyConfig) and cfg.proxy.train_config(0).epochs == 1


def test_scale_family_config_composes_with_sweep_and_dict_overrides():
    cfg = load("scale_family", ["coefficients={alpha: 1.2, beta: 1.1, gamma: 1.15}", "max_phi=3", "train.upto=1"])
    assert dict(cfg.coefficients) == {"alpha": 1.2, "beta": 1.1, "gamma": 1.15}
    assert cfg.max_phi == 3 and cfg.train.upto == 1 and list(cfg.dropout) == [0.2, 0.5]
    cfg.proxy.train_config(0)
    cfg = load("scale_family")
    assert cfg.coefficients == "paper" and cfg.base is None and cfg.max_phi == 7
