"""Results a user can trust: no architecture trained twice in a study (concurrent workers, resumes,
requeues), and one protocol per study (a resume with another protocol is refused, nothing written)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

TINY = ["rerank=none", "proxy.train_size=256", "proxy.minival_size=200", "proxy.epochs=1", "proxy.threads=1",
        "proxy.bn_recalibrate_batches=2", "proxy.eval_batch_size=200"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _start(tmp: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(["nas-search", f"results_dir={tmp}", *TINY, *args], cwd=tmp, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run(tmp: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["nas-search", f"results_dir={tmp}", *TINY, *args], cwd=tmp, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def _study(tmp: Path, name: str) -> optuna.Study:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(tmp / name / "study.journal"))))


def _trained(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            and t.user_attrs.get("duplicate_of") is None]


def _assert_distinct_and_budget(study: optuna.Study, budget: int) -> None:
    trained = _trained(study)
    archs = [t.user_attrs["arch"] for t in trained]
    assert len(archs) == budget, [(t.number, t.state.name, t.user_attrs.get("reason")) for t in study.get_trials()]
    assert len(set(archs)) == len(archs), "an architecture was trained twice"
    for t in study.get_trials():  # a duplicate names a trial with the same architecture
        twin = t.user_attrs.get("duplicate_of")
        if twin is not None:
            assert study.trials[twin].user_attrs["arch"] == t.user_attrs["arch"]


def test_two_terminals_then_a_larger_budget_train_distinct_architectures(tmp_path):
    args = ["search.study_name=twins", "search.n_trials=4"]
    procs = [_start(tmp_path, *args) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    study = _study(tmp_path, "twins")
    _assert_distinct_and_budget(study, 4)
    streams = {k: v for k, v in study.user_attrs.items() if k.startswith("sampler_stream_")}
    assert len(streams) == 2 and len({v["sampler_seed"] for v in streams.values()}) == 2  # no replay
    again = _run(tmp_path, "search.study_name=twins", "search.n_trials=6")
    assert again.returncode == 0, again.stderr[-3000:]
    _assert_distinct_and_budget(_study(tmp_path, "twins"), 6)


def test_a_requeued_worker_does_not_replay_its_proposals(tmp_path):
    args = ["search.study_name=requeue", "search.n_trials=4", "search.warm_start=[]"]
    proc = _start(tmp_path, *args)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # wait for a finished trial, then "requeue" (SIGTERM + restart)
        journal = tmp_path / "requeue" / "study.journal"
        try:
            if journal.exists() and any(t.state == TrialState.COMPLETE for t in _study(tmp_path, "requeue").get_trials()):
                break
        except KeyError:  # the journal exists, the study is not in it yet
            pass
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 143
    done = _run(tmp_path, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    study = _study(tmp_path, "requeue")
    _assert_distinct_and_budget(study, 4)
    seeds = [v["sampler_seed"] for k, v in study.user_attrs.items() if k.startswith("sampler_stream_")]
    assert len(seeds) == 2 and seeds[0] != seeds[1]


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("protocol")
    proc = _run(tmp, "search.study_name=p", "search.n_trials=1", "search.warm_start=[]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp


@pytest.mark.parametrize("override, key", [
    ("proxy.epochs=2", "proxy.epochs"), ("proxy.train_size=300", "proxy.train_size"),
    ("proxy.optimizer=adamw", "proxy.optimizer"), ("proxy.lr=0.05", "proxy.lr"),
    ("proxy.resolution=40", "proxy.resolution"), ("proxy.label_smoothing=0.0", "proxy.label_smoothing"),
    ("objective.w=-0.1", "objective.alpha"), ("objective.metric=params", "objective.metric"),
    ("objective.max_flops=1e9", "objective.max_flops"), ("space.kernels=[3]", "space.kernels"),
    ("search.seed=1", "data.split_seed"), ("proxy.minival_size=300", "proxy.minival_size"),
    ("space.head_multipliers=[0.5,1.0]", "space.head_multipliers"),
])
def test_another_protocol_is_refused_and_nothing_is_written(made, override, key):
    folder = made / "p"
    before = _snapshot(folder)
    proc = _run(made, "search.study_name=p", "search.n_trials=2", "search.warm_start=[]", override)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0] and "search.study_name" in lines[0], proc.stderr
    assert _snapshot(folder) == before


def test_another_dataset_root_is_refused(made, tmp_path):
    import shutil

    from effnas.data import get_source

    copy = tmp_path / "fmnist"
    shutil.copytree(get_source("fashion_mnist").default_root, copy)
    proc = _run(made, "search.study_name=p", "search.warm_start=[]", f"dataset.root={copy}")
    assert proc.returncode == 2 and "data.root" in proc.stderr, proc.stderr


def test_what_does_not_change_a_score_may_differ(made):
    proc = _run(made, "search.study_name=p", "search.n_trials=2", "search.warm_start=[]", "proxy.threads=2",
                "proxy.eval_batch_size=100", "search.timeout=600", "sampler=random", "pruner=none")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(_trained(_study(made, "p"))) == 2


def test_reranking_changes_the_winner_when_the_proxy_winner_was_lucky(tmp_path):
    """A study whose proxy winner was lucky -- a heavy network recorded with an inflated proxy reward
    (under MnasNet's hard constraint its real reward is its accuracy divided by its FLOPs excess) --
    is re-ranked by real training: best.json names the other network and records both scores; the
    re-evaluations are trials of the study, shown in trials.parquet."""
    import json

    import pandas as pd

    hard = ["objective=hard", "search.warm_start=[efficientnet-b0]"]
    first = _run(tmp_path, "search.study_name=lucky", "search.n_trials=1", "rerank=none", *hard)
    assert first.returncode == 0, first.stderr[-3000:]
    study = _study(tmp_path, "lucky")
    good = study.trials[0]
    params = dict(good.params)
    for name, dist in good.distributions.items():  # widest, deepest, 5x5 everywhere
        if name.endswith(("_filters", "_layers")):
            params[name] = max(dist.choices)
        elif name.endswith("_kernel"):
            params[name] = 5
    import nas.config  # noqa: F401
    from effnas.config import SpaceConfig
    from search_space import count_flops, count_params

    space = SpaceConfig().build(num_classes=10, in_channels=1, resolution=32)
    giant = space.sample(optuna.trial.FixedTrial(params))
    assert count_flops(giant, 32) > 2 * good.user_attrs["flops"]
    study.add_trial(optuna.trial.create_trial(
        params=params, distributions=dict(good.distributions), value=0.99,
        user_attrs={"arch": giant.to_string(), "reward": 0.99, "accuracy": 0.99, "flops": count_flops(giant, 32),
                    "params": count_params(giant), "resolution": 32, "epochs": 1, "seed": 1}))
    lucky = study.trials[-1].number
    rerank = ["rerank.k=2", "rerank.seeds=2", "rerank.epochs=1", "rerank.train_size=256"]
    second = _run(tmp_path, "search.study_name=lucky", "search.n_trials=2", *rerank, *hard)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "proxy winner was trial" in second.stdout, second.stdout
    best = json.loads((tmp_path / "lucky" / "best.json").read_text())
    assert best["selected_by"] == "rerank" and best["trial"] == good.number
    assert best["rerank"]["proxy_winner"] == lucky and best["rerank"]["changed"] is True
    rows = {c["trial"]: c for c in best["rerank"]["candidates"]}
    assert rows[lucky]["proxy_reward"] == 0.99 and rows[good.number]["proxy_reward"] == good.user_attrs["reward"]
    assert rows[good.number]["reward_mean"] > rows[lucky]["reward_mean"]
    assert rows[lucky]["seeds_done"] == rows[good.number]["seeds_done"] == 2
    df = pd.read_parquet(tmp_path / "lucky" / "trials.parquet")
    reranks = df[df["rerank_of"].notna()]
    assert sorted(reranks["rerank_of"].tolist()) == sorted([good.number, good.number, lucky, lucky])
    assert set(reranks["rerank_seed"].tolist()) == {0, 1}
    again = _run(tmp_path, "search.study_name=lucky", "search.n_trials=2", *rerank, *hard)  # done once
    assert again.returncode == 0 and len(_study(tmp_path, "lucky").get_trials()) == len(df)
