"""The stage-2 Hydra configs compose with every dataset / storage option and name every key."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from nas.search import train_config
from scaling_search.grid import GridSpec


@pytest.mark.parametrize("dataset", ["fashion_mnist", "mnist", "cifar10", "image_folder"])
@pytest.mark.parametrize("storage", ["journal", "sqlite", "postgres"])
def test_scale_search_config_composes(dataset, storage):
    with initialize_config_module(config_module="effnas_conf", version_base="1.3"):
        cfg = compose("scale_search", overrides=[f"dataset={dataset}", f"storage={storage}"])
    assert cfg.dataset.name == dataset and cfg.storage.kind == storage
    assert cfg.base == "efficientnet-b0" and cfg.baselines is False
    assert (cfg.alpha, cfg.beta, cfg.gamma) == (None, None, None)
    grid = GridSpec.from_config(OmegaConf.to_container(cfg.grid))  # the defaults the issue asks for
    assert (grid.alpha, grid.beta, grid.gamma, grid.step, grid.tol, grid.mode) == \
        ((1.0, 1.5), (1.0, 1.3), (1.0, 1.3), 0.05, 0.1, "product")
    assert cfg.search.study_name == f"scale-{dataset}"
    proxy = OmegaConf.to_container(cfg.proxy, resolve=True)
    assert train_config(proxy, 0).epochs == 1


def test_scale_family_config_composes_with_sweep_and_dict_overrides():
    with initialize_config_module(config_module="effnas_conf", version_base="1.3"):
        cfg = compose("scale_family", overrides=["coefficients={alpha: 1.2, beta: 1.1, gamma: 1.15}",
                                                 "max_phi=3", "train.upto=1"])
    assert OmegaConf.to_container(cfg.coefficients) == {"alpha": 1.2, "beta": 1.1, "gamma": 1.15}
    assert cfg.max_phi == 3 and cfg.train.upto == 1 and list(cfg.dropout) == [0.2, 0.5]
    train_config(OmegaConf.to_container(cfg.proxy, resolve=True), 0)
    with initialize_config_module(config_module="effnas_conf", version_base="1.3"):
        cfg = compose("scale_family")
    assert cfg.coefficients == "paper" and cfg.base is None and cfg.max_phi == 7
