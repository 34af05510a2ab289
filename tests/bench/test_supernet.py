"""bench/supernet.py's ``--space`` option: parsed into the space config ``nas-search`` takes.

The bench itself is long (``python bench/supernet.py --smoke`` runs its machinery at toy sizes)."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import pytest

from search_space import ConvType, SearchSpace

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module("bench.supernet")


def test_space_options_build_the_space_they_name(bench):
    options = bench.space_options(["ops=mbconv", "skips=identity", "expand_ratios=3,6", "se_ratios=0,0.25"],
                                  argparse.ArgumentParser())
    assert options == {"ops": ["mbconv"], "skips": ["identity"], "expand_ratios": [3, 6], "se_ratios": [0, 0.25]}
    space = SearchSpace.from_config(options, num_classes=10, in_channels=1, resolution=32)
    for stage in space.stages:
        assert {t for _, t, _ in stage.variants()} == {ConvType.MBCONV}
        assert stage.skips == ("identity",) and stage.expand_ratios == (3, 6)


@pytest.mark.parametrize("item", ["ops", "ops=", "=mbconv"])
def test_a_malformed_space_option_is_a_usage_error(bench, item, capsys):
    with pytest.raises(SystemExit) as info:
        bench.space_options([item], argparse.ArgumentParser(prog="supernet.py"))
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"--space {item!r}: expected KEY=V1,V2" in err
