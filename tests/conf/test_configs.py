"""Every config composes with every option of every group, and the configs ship with the package."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]
APPS = {"nas_search": ["dataset", "space", "sampler", "pruner", "storage", "objective"],
        "nas_train": ["dataset"], "scale_search": ["dataset", "storage"], "scale_family": []}


def _options(group: str) -> list[str]:
    folder = resources.files("effnas_conf").joinpath(group)
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


CASES = [(app, group, option) for app, groups in APPS.items() for group in groups for option in _options(group)]


@pytest.mark.parametrize("app, group, option", CASES)
def test_every_group_option_composes(app, group, option, monkeypatch):
    monkeypatch.setenv("EFFNAS_STORAGE_URL", "postgresql://u:p@127.0.0.1:1/db")
    with initialize_config_module(config_module="effnas_conf", version_base="1.3"):
        cfg = compose(config_name=app, overrides=[f"{group}={option}"], return_hydra_config=False)
    plain = OmegaConf.to_container(cfg, resolve=False)
    assert plain[group] is not None
    # everything that is not a mandatory user value (???) resolves
    for key in plain:
        if key != "hydra":
            OmegaConf.to_container(cfg[key], resolve=True, throw_on_missing=False) \
                if OmegaConf.is_config(cfg[key]) else cfg[key]


@pytest.mark.parametrize("app", list(APPS))
def test_default_config_composes(app):
    with initialize_config_module(config_module="effnas_conf", version_base="1.3"):
        cfg = compose(config_name=app)
    assert OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def test_non_editable_install_ships_the_configs(tmp_path):
    """`pip install .` (not -e): the CLIs find their configs from any working directory."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(ROOT)], check=True, capture_output=True, timeout=300)
    assert (target / "effnas_conf" / "nas_search.yaml").is_file()
    assert (target / "effnas_conf" / "hydra" / "job_logging" / "effnas.yaml").is_file()
    env = {**os.environ, "PYTHONPATH": str(target)}
    work = tmp_path / "elsewhere"
    work.mkdir()
    code = ("import sys, nas, nas.cli; assert nas.__file__.startswith(sys.argv[1]), nas.__file__; "
            "sys.argv = ['nas-search', '--cfg', 'job', 'search.n_trials=7']; nas.cli.search_main()")
    proc = subprocess.run([sys.executable, "-c", code, str(target)], cwd=work, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "n_trials: 7" in proc.stdout
    for entry in ("scaling_search.cli:search_main", "scaling_search.cli:family_main", "nas.report:main"):
        module, func = entry.split(":")
        proc = subprocess.run([sys.executable, "-c", f"import {module} as m; assert callable(m.{func})"],
                              cwd=work, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
