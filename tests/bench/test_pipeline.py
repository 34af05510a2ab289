"""bench/pipeline.py's bookkeeping: the FLOPs-matched EfficientNet and one training per network.

The bench itself is hours of training; what it decides before and around the trainings is
checked here (``python bench/pipeline.py --smoke`` runs the whole machinery at toy sizes)."""

from __future__ import annotations

import pytest

from search_space import count_flops, reference_spec


@pytest.fixture
def pipeline(import_bench):
    return import_bench("pipeline")


@pytest.fixture
def ref():
    return reference_spec("efficientnet-b0", num_classes=10, in_channels=1).replace(resolution=32)


@pytest.mark.parametrize("target, resolution", [(2_940_000, 32), (22_736_704, 67)])
def test_matched_efficientnet_is_within_five_percent_at_the_resolution(pipeline, ref, target, resolution):
    spec, width, depth = pipeline.matched_efficientnet(ref, target, resolution)
    assert spec.resolution == resolution
    assert abs(count_flops(spec, resolution) / target - 1) <= 0.05
    assert width < 1 and depth < 1  # both smaller than the 8.33M-FLOPs B0 at 32 px


def test_matched_efficientnet_none_when_out_of_reach(pipeline, ref):
    assert pipeline.matched_efficientnet(ref, 10_000, 32) is None


def test_trainer_trains_each_network_once(pipeline, monkeypatch, tmp_path):
    from bench.common import Runs

    runs = Runs(tmp_path / "pipeline.json")
    runs.put("EfficientNet-B0|A|0", {"test_accuracy": 0.5, "seconds": 1.0})
    runs.put("proxy|B", {"accuracy": 0.3, "seconds": 1.0})
    trained = []

    def train(job, configs):
        trained.append((job.kind, job.arch, job.seed))
        return {"accuracy" if job.kind == "proxy" else "test_accuracy": 0.1 * len(trained), "seconds": 2.0}

    monkeypatch.setattr(pipeline, "_train_job", train)
    Job = pipeline.Job
    jobs = [Job("searched B0|A|0", "A", 0, "full", "searched B0"),  # measured under another name
            Job("searched B0|A|1", "A", 1, "full", "searched B0"),
            Job("matched|A|1", "A", 1, "full", "matched"),  # the same network and seed: trained once
            Job("matched|A|2", "A", 2, "full", "matched"),
            Job("proxy|C", "C", 0, "proxy", "searched B0 (1-epoch proxy)"),
            Job("proxy|C", "C", 0, "proxy", "matched (1-epoch proxy)"),
            Job("proxy|B", "B", 0, "proxy", "x (1-epoch proxy)")]
    pipeline.Trainer(runs, None, None, jobs=1, started=0.0).run(jobs)

    assert sorted(trained) == [("full", "A", 1), ("full", "A", 2), ("proxy", "C", 0)]
    saved = Runs(tmp_path / "pipeline.json")
    assert saved.get("searched B0|A|0") == {"test_accuracy": 0.5, "seconds": 1.0}
    assert saved.get("searched B0|A|1") == saved.get("matched|A|1") is not None
    assert saved.get("matched|A|2")["test_accuracy"] != saved.get("matched|A|1")["test_accuracy"]
    assert saved.get("proxy|C")["accuracy"] > 0 and saved.get("proxy|B")["accuracy"] == 0.3
    pipeline.Trainer(saved, None, None, jobs=1, started=0.0).run(jobs)  # all there: nothing trained again
    assert len(trained) == 3


def test_trainer_runs_by_priority_then_longest_first(pipeline, monkeypatch, tmp_path):
    from bench.common import Runs

    order = []
    monkeypatch.setattr(pipeline, "_train_job", lambda job, configs: order.append(job.arch) or
                        {"accuracy": 0.5, "seconds": 1.0})
    Job = pipeline.Job
    jobs = [Job("b3 long", "b3 long", 0, "proxy", "x", cost=9.0, priority=3),
            Job("b1 short", "b1 short", 0, "proxy", "x", cost=1.0, priority=1),
            Job("b1 long", "b1 long", 0, "proxy", "x", cost=5.0, priority=1),
            Job("b2", "b2", 0, "proxy", "x", cost=7.0, priority=2)]
    pipeline.Trainer(Runs(tmp_path / "a.json"), None, None, jobs=1, started=0.0).run(jobs)
    assert order == ["b1 long", "b1 short", "b2", "b3 long"]


def test_a_resumed_training_counts_only_its_unsaved_epochs(pipeline, monkeypatch, tmp_path, capsys):
    """Longest first and the ETA by the work left: a 10-unit training with 4 of 5 epochs saved has 2
    units left, so the 5-unit one runs first; and the ETA after it is not taken from the resumed
    one's whole cost (it was: "about 0 min left" after a resumed b3 epoch, with hours to go)."""
    import torch

    from bench.common import Runs
    from effnas.train import ProxyConfig

    full = ProxyConfig(epochs=5)
    Job = pipeline.Job
    resumed, fresh, last = (Job("a|A|0", "A", 0, "full", "a", cost=10.0), Job("b|B|0", "B", 0, "full", "b", cost=5.0),
                            Job("c|C|0", "C", 0, "full", "c", cost=5.0))
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    torch.save({"identity": {"arch": "A", "train": {"seed": 0, "epochs": 5}}, "epoch": 4},
               pipeline.checkpoint_path(ckpts, resumed.key))
    pipeline.checkpoint_path(ckpts, last.key).write_bytes(b"torn")  # unreadable: all of it left
    trainer = pipeline.Trainer(Runs(tmp_path / "a.json"), full, full, jobs=1, started=0.0, checkpoints=ckpts)
    assert [trainer._saved_fraction(j) for j in (resumed, fresh, last)] == [0.8, 0.0, 0.0]

    clock = iter(range(0, 1000, 60))  # every reading a minute later
    monkeypatch.setattr(pipeline.time, "monotonic", lambda: next(clock))
    order = []
    monkeypatch.setattr(pipeline, "_train_job", lambda job, configs: order.append(job.arch) or
                        {"test_accuracy": 0.5, "seconds": 1.0})
    trainer.run([resumed, fresh, last])
    assert order == ["B", "C", "A"]
    lines = [line for line in capsys.readouterr().out.splitlines() if "done" in line]
    # after B (5 of 12 units) in 2 minutes: 7 units left, about 2.8 min
    assert lines[0].endswith("1/3 done, about 3 min left"), lines


def test_status_shows_what_is_measured_and_what_is_in_progress(pipeline, tmp_path, ref):
    import torch

    from bench.common import Runs

    runs = Runs(tmp_path / "pipeline.json")
    a = ref.to_string()
    for seed, acc in enumerate((0.80, 0.82, 0.84)):
        runs.put(f"EfficientNet-B0|{a}|{seed}", {"test_accuracy": acc, "seconds": 1.0})
    runs.put(f"proxy|{a}", {"accuracy": 0.7, "seconds": 1.0})
    (tmp_path / "checkpoints").mkdir()
    torch.save({"identity": {"arch": a, "train": {"seed": 3, "epochs": 5}}, "epoch": 2},
               tmp_path / "checkpoints" / "x.pt")
    (tmp_path / "checkpoints" / "y.pt").write_bytes(b"torn")
    text = pipeline.status(tmp_path)
    assert f"{tmp_path}: 1 networks measured" in text
    assert "| EfficientNet-B0 | 4.02M | 8.33 | 32 | 0.8200 ± 0.0200 | 3 |" in text
    assert "in progress: EfficientNet-B0 seed 3: epoch 2/5 saved (x.pt)" in text
    assert "in progress: y.pt (unreadable)" in text


def test_trainer_hands_its_dataset_to_every_training(pipeline, monkeypatch, tmp_path):
    from bench.common import Runs

    seen = []
    monkeypatch.setattr(pipeline, "_train_job", lambda job, configs: seen.append(configs["dataset"]) or
                        {"accuracy": 0.5, "seconds": 1.0})
    job = pipeline.Job("proxy|A", "A", 0, "proxy", "a")
    pipeline.Trainer(Runs(tmp_path / "a.json"), None, None, jobs=1, started=0.0).run([job])
    root = {"name": "fashion_mnist", "root": str(tmp_path)}
    pipeline.Trainer(Runs(tmp_path / "b.json"), None, None, jobs=1, started=0.0, dataset=root).run([job])
    assert seen == [pipeline.DATASET, root] and pipeline.DATASET["root"] is None


KILLED_RUN = """
import logging, sys
from pathlib import Path
sys.path.insert(0, {root!r})
logging.basicConfig(level=logging.INFO, format="%(message)s")
from bench import pipeline
from bench.common import Runs
from effnas.train import ProxyConfig
full = ProxyConfig(epochs=40, train_size=512, minival_size=100, threads=1)
job = pipeline.Job("tiny|{arch}|0", {arch!r}, 0, "full", "tiny")
pipeline.Trainer(Runs(Path({json!r})), full, full, jobs=1, started=0.0, checkpoints=Path({ckpts!r})).run([job])
"""


def test_a_killed_bench_resumes_its_training_after_the_last_saved_epoch(pipeline, tmp_path):
    """SIGKILL while a 40-epoch training runs: the rerun continues from the checkpoint (not from
    epoch 1), records the test accuracy an uninterrupted training gets, and removes the checkpoint."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import torch

    from bench.common import Runs
    from effnas.train import ProxyConfig

    arch = ("stem=16 r1_k3_s11_e1_i16_o16 r1_k3_s22_e1_i16_o24 r1_k3_s22_e1_i24_o24 r1_k3_s22_e1_i24_o32 "
            "r1_k3_s22_e1_i32_o32 head=64 classes=10 channels=1 res=32")
    root = str(Path(pipeline.__file__).resolve().parents[1])
    ckpts = tmp_path / "checkpoints"
    script = KILLED_RUN.format(root=root, arch=arch, json=str(tmp_path / "pipeline.json"), ckpts=str(ckpts))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while not list(ckpts.glob("*.pt")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    (ckpt,) = ckpts.glob("*.pt")
    saved = torch.load(ckpt, weights_only=True)["epoch"]
    assert 1 <= saved < 40
    assert Runs(tmp_path / "pipeline.json").get(f"tiny|{arch}|0") is None

    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"  tiny seed 0: resuming after epoch {saved}/40 from {ckpt}" in done.stdout
    assert f"  tiny seed 0: epoch {saved}/40" not in done.stdout and "  tiny seed 0: epoch 40/40" in done.stdout
    assert not list(ckpts.glob("*.pt"))
    resumed = Runs(tmp_path / "pipeline.json").get(f"tiny|{arch}|0")["test_accuracy"]
    full = ProxyConfig(epochs=40, train_size=512, minival_size=100, threads=1)
    whole = pipeline._train_job(pipeline.Job("x", arch, 0, "full", "x"),
                                {"full": full, "proxy": full, "dataset": pipeline.DATASET})
    assert resumed == whole["test_accuracy"]


def test_the_plot_draws_each_family_as_one_line_in_flops_order(pipeline, tmp_path, monkeypatch):
    """The bench's network names, as main() writes them, each on its line; the rest alone."""
    names = {"searched B0": "searched", "searched b2": "searched", "searched b1": "searched",
             "EfficientNet-B0": "paper", "EfficientNet b1 (paper coefficients)": "paper",
             "EfficientNet-B0 w0.55 d0.6 (matched)": "matched",
             "EfficientNet-B0 w0.8 d0.9 at 50 px (matched to searched b1)": "matched",
             "stage-1 network 3 by proxy reward": "stage-1", "MnasNet-A1": None, "MobileNetV2": None}
    assert {name: pipeline._kind(name) for name in names} == names
    mflops = [3, 9, 5, 8, 20, 2.4, 14, 2.8, 6.4, 6.0]  # searched b2 before b1: the line sorts them
    table = [{"name": name, "flops": f * 1e6, "mean": 0.8 + i / 100, "sd": 0.01}
             for i, (name, f) in enumerate(zip(names, mflops))]
    drawn = []
    import matplotlib.axes

    real = matplotlib.axes.Axes.errorbar
    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar",
                        lambda ax, x, y, **kw: drawn.append((kw["label"], x)) or real(ax, x, y, **kw))
    pipeline._plot(table, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    lines = {label: x for label, x in drawn}
    searched = [r["flops"] / 1e6 for r in table if pipeline._kind(r["name"]) == "searched"]
    assert lines["searched B0 and its family b1.."] == sorted(searched) == [3, 5, 9]
    assert len(lines["EfficientNet-B0 matched to each searched member's FLOPs"]) == 2
    assert [label for label, _ in drawn][-2:] == ["MnasNet-A1", "MobileNetV2"] and len(drawn) == 6
