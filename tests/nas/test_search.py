"""nas-search end to end on the real Fashion-MNIST: CLI, results files, resume, pruning,
divergence, hard limits and one-line errors."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import struct
import subprocess
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from effnas.results import TRIAL_COLUMNS
from nas.search import run_search
from search_space import ArchSpec, count_flops, count_params, default_space

TINY = ["rerank=none", "proxy.train_size=512", "proxy.minival_size=500", "proxy.epochs=1", "proxy.threads=1",
        "proxy.bn_recalibrate_batches=2"]


def nas_search(tmp: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["nas-search", f"results_dir={tmp}", *args], cwd=tmp, capture_output=True,
                          text=True, timeout=timeout)


def tiny_cfg(tmp: Path, **overrides) -> dict:
    cfg = {
        "results_dir": str(tmp),
        "dataset": {"name": "fashion_mnist", "root": None, "download": False, "flip": True},
        "space": {},
        "sampler": {"name": "random"},
        "pruner": {"name": "none"},
        "storage": {"kind": "journal"},
        "objective": {"metric": "flops", "target": "auto", "w": -0.07},
        "search": {"study_name": "t", "n_trials": 3, "seed": 0, "warm_start": []},
        "rerank": {"k": 0},
        "proxy": {"epochs": 1, "train_size": 256, "minival_size": 200, "resolution": 32, "threads": 1,
                  "bn_recalibrate_batches": 2},
    }
    for dotted, value in overrides.items():
        node = cfg
        *parents, last = dotted.split("__")
        for p in parents:
            node = node[p]
        node[last] = value
    return cfg


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search")
    proc = nas_search(tmp, "search.n_trials=3", "search.study_name=ci", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, proc


def test_cli_writes_trials_and_best(first_run):
    tmp, proc = first_run
    folder = tmp / "ci"
    assert "winner (B0)" in proc.stdout
    pq, csv = pd.read_parquet(folder / "trials.parquet"), pd.read_csv(folder / "trials.csv")
    assert list(pq.columns[: len(TRIAL_COLUMNS)]) == list(TRIAL_COLUMNS)
    stage_cols = default_space().param_names()
    assert set(stage_cols) <= set(pq.columns)
    assert len(pq) == 3 and list(pq["number"]) == [0, 1, 2]
    assert set(pq["state"]) == {"COMPLETE"}
    # same data in both files
    assert list(csv.columns) == list(pq.columns)
    for col in ("number", "reward", "accuracy", "flops", "params", "plain_layers", "arch", "worker", "seed"):
        assert list(csv[col].astype(str)) == list(pq[col].astype(str)), col
    # the numbers are what the formulas say, for the arch that was trained
    for _, row in pq.iterrows():
        spec = ArchSpec.from_string(row["arch"])
        assert row["flops"] == count_flops(spec) and row["params"] == count_params(spec)
        assert row["plain_layers"] == spec.plain_layers
        assert 0 <= row["accuracy"] <= 1 and row["train_seconds"] > 0 and row["epochs"] == 1
    # the warm start put EfficientNet-B0 first
    assert pq.loc[0, "s6_filters"] == 192 and pq.loc[0, "s1_expand"] == 1
    best = json.loads((folder / "best.json").read_text())
    spec = ArchSpec.from_string(best["arch"])
    assert spec.num_classes == 10 and spec.in_channels == 1 and best["resolution"] == 32
    assert best["reward"] == pq["reward"].max()
    assert math.isclose(best["reward"], best["accuracy"] * (best["flops"] / best["T"]) ** best["w"])
    assert best["dataset"] == "fashion_mnist" and best["w"] == -0.07
    assert (folder / "config.yaml").is_file() and list((folder / "configs").glob("*.yaml"))


def test_second_invocation_resumes(first_run):
    tmp, _ = first_run
    folder = tmp / "ci"
    before = pd.read_parquet(folder / "trials.parquet")
    proc = nas_search(tmp, "search.n_trials=5", "search.study_name=ci", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = pd.read_parquet(folder / "trials.parquet")
    assert list(after["number"]) == [0, 1, 2, 3, 4]
    # finished trials were not re-run: identical rows, same start times
    pd.testing.assert_frame_equal(after.iloc[:3].reset_index(drop=True), before, check_dtype=False)
    assert after["worker"].nunique() == 2


def test_threshold_pruner_really_prunes(tmp_path):
    out = run_search(tiny_cfg(tmp_path, pruner={"name": "threshold", "lower": 0.999},
                              search__n_trials=2, proxy__epochs=2))
    df = pd.read_parquet(out.folder / "trials.parquet")
    assert list(df["state"]) == ["PRUNED", "PRUNED"]
    assert df["reason"].str.contains("pruned by ThresholdPruner at epoch 1").all()
    assert (df["epochs"] == 1).all()  # stopped before its second (last) epoch
    assert out.best is None


def test_median_pruner_stops_below_median(tmp_path):
    # 2 epochs; trials after the first two are compared with the median of earlier epoch-1 scores
    out = run_search(tiny_cfg(tmp_path, pruner={"name": "median", "n_startup_trials": 2},
                              search__n_trials=8, proxy__epochs=3, sampler={"name": "random"}))
    study = optuna.load_study(study_name="t", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out.folder / "study.journal"))))
    trials = study.get_trials()
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "the seeded run prunes at least one trial"
    for t in pruned:  # Optuna's rule: best value so far below the median of COMPLETE trials at that step
        step = max(t.intermediate_values)
        earlier = [u.intermediate_values[step] for u in trials
                   if u.state == optuna.trial.TrialState.COMPLETE and u.number < t.number
                   and step in u.intermediate_values]
        assert len(earlier) >= 2
        assert max(t.intermediate_values.values()) < float(np.nanpercentile(earlier, 50)) + 1e-12
        assert t.user_attrs["reason"].startswith(f"pruned by MedianPruner at epoch {step}")
        assert step < 3  # never after the last epoch
    done = sum(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials)
    assert done == 8


def test_the_last_epoch_is_never_pruned(tmp_path):
    """With one epoch the training is over when the pruner could speak: nothing is pruned."""
    out = run_search(tiny_cfg(tmp_path, pruner={"name": "threshold", "lower": 0.999}, search__n_trials=2))
    df = pd.read_parquet(out.folder / "trials.parquet")
    assert list(df["state"]) == ["COMPLETE", "COMPLETE"]


def test_nan_loss_is_recorded_and_the_study_continues(tmp_path):
    out = run_search(tiny_cfg(tmp_path, proxy__lr=1e12, proxy__optimizer="sgd", search__n_trials=3))
    df = pd.read_parquet(out.folder / "trials.parquet")
    assert len(df) == 3 and set(df["state"]) == {"PRUNED"}
    assert df["reason"].str.startswith("diverged: loss became").all()


def test_hard_limit_rejects_before_training(tmp_path):
    out = run_search(tiny_cfg(tmp_path, objective={"metric": "flops", "target": "auto", "w": -0.07,
                                                   "max_flops": 1_000_000}, search__n_trials=3))
    df = pd.read_parquet(out.folder / "trials.parquet")
    assert set(df["state"]) == {"PRUNED"}
    assert df["reason"].str.startswith("max_flops:").all()
    assert (df["epochs"] == 0).all() and df["train_seconds"].isna().all() and df["accuracy"].isna().all()
    assert (df["flops"] > 1_000_000).all()


def test_multi_objective_writes_pareto_front(tmp_path):
    out = run_search(tiny_cfg(tmp_path, sampler={"name": "nsgaii", "population_size": 2},
                              search__n_trials=3))
    front = json.loads((out.folder / "pareto.json").read_text())
    assert front and all({"trial", "accuracy", "flops", "arch"} <= set(p) for p in front)
    assert (out.folder / "best.json").is_file()


# -- bad input: one line, non-zero exit, earlier results untouched ------------------------------

def _idx(path: Path, magic: int, dims: list[int], payload: bytes) -> None:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims)
    with gzip.open(path, "wb") as f:
        f.write(header + payload)


@pytest.fixture()
def mnist_dirs(tmp_path):
    good_labels = bytes([0, 1] * 50)
    bad_magic = tmp_path / "bad_magic"
    truncated = tmp_path / "truncated"
    for root in (bad_magic, truncated):
        root.mkdir()
        for split, n in (("train", 100), ("t10k", 100)):
            _idx(root / f"{split}-labels-idx1-ubyte.gz", 2049, [n], good_labels)
    for split in ("train", "t10k"):
        _idx(bad_magic / f"{split}-images-idx3-ubyte.gz", 1234, [100, 28, 28], bytes(100 * 784))
        _idx(truncated / f"{split}-images-idx3-ubyte.gz", 2051, [100, 28, 28], bytes(50 * 784))
    one_class = tmp_path / "one_class"
    (one_class / "cat").mkdir(parents=True)
    from PIL import Image
    Image.new("L", (8, 8)).save(one_class / "cat" / "a.png")
    broken = tmp_path / "broken"
    for c in ("cat", "dog"):
        (broken / c).mkdir(parents=True)
        Image.new("L", (8, 8)).save(broken / c / "a.png")
    (broken / "dog" / "b.png").write_bytes(b"not a png")
    return {"bad_magic": bad_magic, "truncated": truncated, "one_class": one_class, "broken": broken}


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


BAD_CASES = {
    "missing root": (["dataset.root=/nonexistent/fmnist"], "/nonexistent/fmnist"),
    "wrong magic": (["dataset=mnist", "dataset.root={bad_magic}"], "magic"),
    "truncated idx": (["dataset=mnist", "dataset.root={truncated}"], "truncated"),
    "unknown dataset": (["dataset=imagenet21k"], "imagenet21k"),
    "one class": (["dataset=image_folder", "dataset.root={one_class}"], "class"),
    "unreadable image": (["dataset=image_folder", "dataset.root={broken}"], "b.png"),
    "T zero": (["objective.target=0"], "objective.target"),
    "T negative": (["objective.target=-5"], "objective.target"),
    "n_trials zero": (["search.n_trials=0"], "search.n_trials"),
    "resolution 16": (["proxy.resolution=16"], "resolution"),
    "unknown sampler": (["sampler=cmaes"], "cmaes"),
    "unknown pruner": (["pruner=sometimes"], "sometimes"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_is_one_line_and_leaves_results_alone(first_run, mnist_dirs, case):
    tmp, _ = first_run
    args, needle = BAD_CASES[case]
    args = [a.format(**mnist_dirs) for a in args]
    before = _snapshot(tmp / "ci")
    proc = nas_search(tmp, "search.study_name=ci", *TINY, *args, timeout=120)
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert needle in errors[0], errors[0]
    assert _snapshot(tmp / "ci") == before


def test_nas_train_rejects_malformed_arch(tmp_path):
    proc = subprocess.run(["nas-train", "arch=r1_k4_s11_e6_i32_o16", f"results_dir={tmp_path}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: bad block string 'r1_k4_s11_e6_i32_o16'")
    assert "kernel" in proc.stderr


def test_nas_train_trains_best_json_and_reports_test_accuracy(first_run):
    tmp, _ = first_run
    best = tmp / "ci" / "best.json"
    proc = subprocess.run(["nas-train", f"arch={best}", "proxy.epochs=1", "proxy.train_size=512",
                           "proxy.minival_size=500", "proxy.threads=1"], cwd=tmp, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test accuracy" in proc.stdout
    runs = list((tmp / "ci" / "train").glob("ci_*"))
    assert len(runs) == 1
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert 0 <= metrics["test_accuracy"] <= 1 and metrics["epochs"] == 1
    import torch
    saved = torch.load(runs[0] / "model.pt", weights_only=False)
    assert ArchSpec.from_string(saved["arch"]).num_classes == 10
