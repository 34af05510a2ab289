"""``nas-search evaluator=supernet`` end to end on the real Fashion-MNIST, at toy sizes: the
supernet is trained once into the cache, every trial is scored with inherited weights, the study
refuses another evaluator, and the top-k re-ranking still trains stand-alone."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from nas.search import run_search

TINY = ["rerank=none", "proxy.train_size=256", "proxy.minival_size=200", "proxy.epochs=1", "proxy.threads=1",
        "proxy.batch_size=64", "proxy.bn_recalibrate_batches=2", "sampler=random"]
SUPERNET = ["evaluator=supernet", "evaluator.epochs=1", "evaluator.train_size=256", "evaluator.random_subnets=1",
            "evaluator.recalibrate_batches=1", "evaluator.eval_size=100"]


def _config(tmp: Path, study: str, multi_objective: bool = False, **groups: dict) -> dict:
    """run_search's config for a 3-trial supernet study at the toy sizes above."""
    return {"results_dir": str(tmp),
            "search": {"study_name": study, "n_trials": 3, "warm_start": [], "multi_objective": multi_objective},
            "proxy": {"train_size": 256, "minival_size": 200, "threads": 1, "batch_size": 64,
                      "bn_recalibrate_batches": 2},
            "evaluator": {"name": "supernet", "epochs": 1, "train_size": 256, "random_subnets": 1,
                          "recalibrate_batches": 1, "eval_size": 100},
            **groups}


def nas_search(tmp: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["nas-search", f"results_dir={tmp}", *args], cwd=tmp, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("supernet")
    proc = nas_search(tmp, "search.n_trials=6", "search.study_name=sn", *TINY, *SUPERNET)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, proc


def test_trials_are_scored_by_the_supernet(run):
    tmp, proc = run
    df = pd.read_parquet(tmp / "sn" / "trials.parquet")
    assert len(df) == 6 and set(df["state"]) == {"COMPLETE"}
    assert df["arch"].nunique() == 6
    assert (df["epochs"] == 0).all()  # nothing trained per trial
    assert df["accuracy"].between(0, 1).all() and df["accuracy"].nunique() > 1
    assert "supernet: training" in proc.stderr and "supernet: saved" in proc.stderr
    assert [p.name for p in (tmp / "supernets").glob("*/supernet.pt")] == ["supernet.pt"]
    best = json.loads((tmp / "sn" / "best.json").read_text())
    assert best["selected_by"] == "supernet"


def test_a_second_study_loads_the_cached_supernet(run):
    tmp, _ = run
    proc = nas_search(tmp, "search.n_trials=2", "search.study_name=sn2", *TINY, *SUPERNET)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "supernet: training" not in proc.stderr and "(trained before)" in proc.stderr


def test_a_study_never_mixes_evaluators(run):
    tmp, _ = run
    proc = nas_search(tmp, "search.n_trials=7", "search.study_name=sn", *TINY)
    assert proc.returncode == 2
    assert "another protocol" in proc.stderr and "proxy.evaluator" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_rerank_retrains_stand_alone(run):
    tmp, _ = run
    out = run_search(_config(tmp, "sn3", sampler={"name": "random"}, pruner={"name": "none"},
                             rerank={"k": 1, "seeds": 1, "epochs": 1, "train_size": 256}))
    df = pd.read_parquet(out.folder / "trials.parquet")
    rerank = df[df["rerank_of"].notna()]
    assert len(rerank) == 1 and int(rerank["epochs"].iloc[0]) == 1 and float(rerank["train_seconds"].iloc[0]) > 0
    assert out.best["selected_by"] == "rerank"


def test_sigint_during_supernet_training_resumes_there(tmp_path):
    """Ctrl-C while the supernet trains: exit 130 with its last epoch checkpointed; the next run
    resumes after that epoch instead of starting over."""
    import signal

    args = ["nas-search", f"results_dir={tmp_path}", "search.n_trials=2", "search.study_name=cut", *TINY, *SUPERNET,
            "evaluator.epochs=3"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "supernet: epoch 1/3 done" in line:
            proc.send_signal(signal.SIGINT)
            break
    _, rest = proc.communicate(timeout=300)
    assert proc.returncode == 130, "".join(seen) + rest
    [checkpoint] = (tmp_path / "supernets").glob("*/checkpoint.pt")
    import torch

    assert torch.load(checkpoint, weights_only=True)["epoch"] in (1, 2)  # the signal may land after epoch 2
    assert not list((tmp_path / "supernets").glob("*/supernet.pt"))
    again = nas_search(tmp_path, "search.n_trials=2", "search.study_name=cut", *TINY, *SUPERNET, "evaluator.epochs=3")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "supernet: resuming after epoch" in again.stderr and "supernet: epoch 1/3 done" not in again.stderr
    assert list((tmp_path / "supernets").glob("*/supernet.pt")) and not checkpoint.exists()


@pytest.mark.parametrize("arg, words", [("evaluator.epochs=0", "evaluator.epochs must be an integer >= 1"),
                                         ("evaluator=surrogate", "evaluator"),
                                         ("evaluator.distill=maybe", "evaluator.distill"),
                                         ("evaluator.sampling=strict", "evaluator.sampling"),
                                         ("evaluator.seed=-1", "evaluator.seed must be")])
def test_bad_evaluator_settings_are_one_line(arg, words, capsys):
    from effnas.cli import run_app

    def never(cfg):
        raise AssertionError("the command line should have been refused first")

    assert run_app("nas_search", never, ["search.n_trials=1", *TINY, *SUPERNET, arg]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], (arg, lines)


@pytest.mark.parametrize("sampler, storage, multi", [("tpe", "sqlite", False), ("nsgaii", "journal", True)])
def test_other_samplers_and_storages(run, sampler, storage, multi):
    tmp, _ = run  # the supernet is cached there already
    out = run_search(_config(tmp, f"sn-{sampler}", multi_objective=multi, sampler={"name": sampler},
                             storage={"kind": storage}, rerank={"k": 0}))
    df = pd.read_parquet(out.folder / "trials.parquet")
    assert len(df) == 3 and set(df["state"]) == {"COMPLETE"} and (df["epochs"] == 0).all()
    assert len(list((tmp / "supernets").glob("*/supernet.pt"))) == 1  # loaded, not trained again
