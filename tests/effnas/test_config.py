"""Every option of every group of every root config composes and builds its typed config; the
configs ship with the package."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

import nas.config  # noqa: F401 -- the stages register their root schemas
import scaling_search.config  # noqa: F401
from effnas.config import ROOTS, compose, group_options, load, to_typed
from effnas.schema import Schema

ROOT = Path(__file__).resolve().parents[2]


def _groups(app: str) -> list[str]:
    schema = ROOTS[app]
    return [f.name for f in dataclasses.fields(schema) if str(f.type) == "Any" and f.default == "???"]


CASES = [(app, group, option) for app in sorted(ROOTS) for group in _groups(app) for option in group_options(group)]
LAUNCHERS = ["basic", "joblib", "local", "slurm", "submitit_local", "submitit_slurm"]


def test_every_root_has_groups():
    assert {a: _groups(a) for a in sorted(ROOTS)} == {
        "nas_search": ["dataset", "proxy", "space", "sampler", "pruner", "storage", "objective", "rerank",
                       "evaluator"],
        "nas_train": ["dataset", "proxy"], "scale_family": ["dataset", "proxy"],
        "scale_search": ["dataset", "proxy", "storage", "rerank"]}
    assert len(CASES) == (4 + 2 + 1 + 3 + 4 + 3 + 2 + 2 + 2) + (4 + 2) + (4 + 2) + (4 + 2 + 3 + 2)


@pytest.mark.parametrize("app, group, option", CASES)
def test_every_group_option_composes(app, group, option, monkeypatch):
    monkeypatch.setenv("EFFNAS_STORAGE_URL", "postgresql://u:p@127.0.0.1:1/db")
    mandatory = {"mnist": "/data/mnist", "cifar10": "/data/cifar", "image_folder": "/data/folder"}
    extra = [f"dataset.root={mandatory[option]}"] if group == "dataset" and option in mandatory else []
    cfg = to_typed(compose(app, [f"{group}={option}", *extra]))
    node = getattr(cfg, group)
    assert isinstance(node, Schema) and dataclasses.is_dataclass(node)
    for f in dataclasses.fields(cfg):
        assert getattr(cfg, f.name) is not None or f.default is None


@pytest.mark.parametrize("app", sorted(ROOTS))
def test_default_config_builds(app):
    cfg = load(app)
    assert type(cfg) is ROOTS[app]


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_every_launcher_composes(launcher):
    cfg = compose("nas_search", [f"hydra/launcher={launcher}"], hydra_config=True)
    assert cfg.hydra.launcher._target_


def test_group_options_come_from_the_registries():
    from effnas.data import dataset_names
    from effnas.study import PRUNERS, SAMPLERS, STORAGES
    from effnas.supernet import EVALUATORS

    assert group_options("dataset") == sorted(dataset_names())
    assert group_options("sampler") == sorted(SAMPLERS.names())
    assert group_options("pruner") == sorted(PRUNERS.names())
    assert group_options("storage") == sorted(STORAGES.names())
    assert group_options("evaluator") == sorted(EVALUATORS.names()) == ["proxy", "supernet"]


def test_proxy_is_one_group_for_every_command():
    search, train = load("nas_search").proxy, load("nas_train").proxy
    assert type(search) is type(train) is type(load("scale_search").proxy) is type(load("scale_family").proxy)
    assert (search.epochs, search.train_size) == (1, 10000) and (train.epochs, train.train_size) == (10, None)


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
    code = ("import sys, nas, nas.cli, effnas; assert nas.__file__.startswith(sys.argv[1]), nas.__file__; "
            "assert effnas.__file__.startswith(sys.argv[1]), effnas.__file__; "
            "sys.argv = ['nas-search', '--cfg', 'job', 'search.n_trials=7']; nas.cli.search_main()")
    proc = subprocess.run([sys.executable, "-c", code, str(target)], cwd=work, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "n_trials: 7" in proc.stdout
    for entry in ("scaling_search.cli:search_main", "scaling_search.cli:family_main", "report.cli:main"):
        module, func = entry.split(":")
        proc = subprocess.run([sys.executable, "-c", f"import {module} as m; assert callable(m.{func})"],
                              cwd=work, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr


def test_space_protocol_names_stem_and_head_only_when_they_are_choices():
    """Studies recorded before ``stem_multipliers`` / ``head_multipliers`` existed resume: the
    protocol leaves them out at their default; set, they are part of it."""
    from effnas.config import SpaceConfig

    default = SpaceConfig().protocol()
    assert "stem_multipliers" not in default and "head_multipliers" not in default
    assert default["filter_multipliers"] == [0.75, 1.0, 1.25]
    wide = SpaceConfig(head_multipliers=[0.5, 1.0]).protocol()
    assert wide["head_multipliers"] == [0.5, 1.0] and "stem_multipliers" not in wide
