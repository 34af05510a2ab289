"""bench/supernet.py's ``--space`` option: parsed into the space config ``nas-search`` takes.

The bench itself is long (``python bench/supernet.py --smoke`` runs its machinery at toy sizes)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from search_space import ConvType, SearchSpace

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def bench(import_bench):
    return import_bench("supernet")


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


def test_reference_fidelity_parses_epochs_and_images(bench):
    assert bench.fidelity("2x20000") == (2, 20000)
    for bad in ["2y", "0x100", "2x0", "x100", "2x", "ax100", "2x1e4"]:
        with pytest.raises(argparse.ArgumentTypeError, match="expected EPOCHSxIMAGES"):
            bench.fidelity(bad)


def test_reference_and_final_trainings_share_rows(bench):
    # the reference and the final re-trainings of one network at one fidelity are the same runs
    from effnas.train import ProxyConfig

    cfg = ProxyConfig(epochs=2, train_size=20000)
    assert bench.retrain_key(cfg, "A", 1) == "final/2x20000/A/1" != bench.retrain_key(cfg, "A", 0)
    assert bench.retrain_key(ProxyConfig(epochs=2, train_size=10000), "A", 1) != "final/2x20000/A/1"


def test_a_bad_reference_is_a_usage_error():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(ROOT / "bench" / "supernet.py"), "--reference", "2y"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith("--reference: '2y': expected EPOCHSxIMAGES with both "
                                                         ">= 1, e.g. 2x20000")


def test_spread_separates_networks_from_seed_noise(bench):
    # three networks 10 points apart, each seed 1 point off its network's mean
    s = bench.spread([[0.5, 0.6, 0.7], [0.52, 0.62, 0.72]])
    assert s["sd_between"] == pytest.approx(0.1) and s["sd_seed"] == pytest.approx(0.02 / 2 ** 0.5)
    assert bench.spread([[0.5, 0.6, 0.7]]) == {"sd_between": pytest.approx(0.1), "sd_seed": None}


@pytest.mark.parametrize("args, words", [
    (["--progressive", "2"], "evaluator.progressive must be a number >= 0 and <= 1, got 2.0"),
    (["--stage-distill", "-1"], "evaluator.stage_distill must be a number >= 0, got -1.0"),
    (["--epochs", "0"], "evaluator.epochs must be an integer >= 1, got 0"),
    (["--supernet-seed", "-3"], "evaluator.seed must be an integer >= 0, got -3"),
    (["--lr", "0"], "evaluator.lr must be a number > 0, got 0.0"),
    (["--distill", "on", "--no-distill"], "argument --no-distill: not allowed with argument --distill"),
])
def test_a_bad_supernet_setting_is_one_line_before_anything_is_written(bench, usage_error, tmp_path, args, words):
    out = tmp_path / "results"
    assert words in usage_error(bench, ["supernet.py", "--results", str(out), *args])
    assert not out.exists()


def test_supernet_only_caches_the_supernet_and_trains_no_proxy(bench, monkeypatch, tmp_path, capsys):
    # --supernet-only: the supernet of the setting given (here another learning rate) lands in the
    # cache a later run scores from; nothing of the tau set is trained
    import json

    out = tmp_path / "results"
    monkeypatch.setattr(sys, "argv", ["supernet.py", "--smoke", "--supernet-only", "--lr", "0.01",
                                      "--results", str(out)])
    bench.main()
    cached = list((out / "cache").rglob("*.pt"))
    assert cached, "no supernet in the cache"
    assert "cached in" in capsys.readouterr().out
    runs = json.loads((out / "supernet.json").read_text())["runs"]
    assert not [k for k in runs if k.startswith("proxy")]
    (row,) = [v for k, v in runs.items() if k.startswith("supernet/")]
    assert row["config"]["lr"] == 0.01


def test_seed_group_collects_the_supernets_of_one_setting(bench, tmp_path):
    # every cached supernet whose setting differs only by its seed, with the tau set's accuracies;
    # another setting, a scoring setting or a supernet with rows missing is not one of them
    from bench.common import Runs

    runs = Runs(tmp_path / "supernet.json")
    setting = {"epochs": 4, "distill": False, "recalibrate_batches": 5}
    for tag, seed, cfg, accs in [("aaa-r5", None, setting, [0.5, 0.6]), ("bbb-r5", 1, setting, [0.6, 0.5]),
                                 ("ccc-r5", None, {**setting, "distill": True}, [0.1, 0.2]),
                                 ("ddd-r9", None, {**setting, "recalibrate_batches": 9}, [0.1, 0.2]),
                                 ("eee-r5", 2, setting, [0.7])]:
        runs.put(f"summary-tau/{tag}", {"supernet": {**cfg, "seed": seed}})
        for i, acc in enumerate(accs):
            runs.put(f"supernet/{tag}/{i}", {"arch": str(i), "accuracy": acc})
    group = bench.seed_group(runs, {**setting, "seed": 1}, 2)
    assert group == [("seed default (aaa-r5)", [0.5, 0.6]), ("seed 1 (bbb-r5)", [0.6, 0.5])]


def test_baselines_orient_every_predictor_so_that_higher_is_better(bench):
    import dataclasses

    from search_space.references import reference_spec

    b0 = reference_spec("efficientnet-b0")
    stages = tuple(dataclasses.replace(st, id_skip=False) if i == 3 else st for i, st in enumerate(b0.stages))
    base = bench.baselines([b0, dataclasses.replace(b0, stages=stages)], 32)
    assert base["fewer plain layers"] == [-7.0, -9.0] and base["FLOPs"][0] == base["FLOPs"][1]
