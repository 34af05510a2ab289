"""nas-train on a plain image folder (no test split) and a folder with one: real PNGs written with PIL,
a real (small) training run on one thread."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from nas.trainone import run_train

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
ARCH = "r1_k3_s11_e1_i32_o16 r1_k3_s22_e1_i16_o24 r1_k3_s22_e1_i24_o40 r1_k3_s22_e1_i40_o80 r1_k3_s22_e1_i80_o112"


def write_folder(root: Path, per_class: int, seed: int = 0) -> None:
    """Two classes that differ in brightness (so a tiny run learns something), 36x36 RGB PNGs."""
    rng = np.random.default_rng(seed)
    for c, base in enumerate((40, 200)):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(base + rng.integers(-30, 30, (36, 36, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.png")


def train_cfg(tmp: Path, root: Path) -> dict:
    return {
        "arch": f"stem=32 {ARCH} head=64 classes=2 channels=3 res=32", "name": "tiny", "results_dir": str(tmp),
        "dataset": {"name": "image_folder", "root": str(root)},
        "proxy": {"epochs": 1, "train_size": None, "minival_size": 8, "batch_size": 8,
                  "threads": 1, "device": "cpu", "bn_recalibrate_batches": 1, "eval_batch_size": 16},
    }



def test_nas_train_on_a_flat_folder_reports_minival_with_a_note(tmp_path: Path, caplog) -> None:
    write_folder(tmp_path / "flowers", per_class=12)
    with caplog.at_level(logging.INFO, logger="effnas"):
        metrics = run_train(train_cfg(tmp_path, tmp_path / "flowers"))
    notes = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "test split" in r.getMessage()]
    assert len(notes) == 1 and "\n" not in notes[0], notes
    assert "image_folder has no test split" in notes[0] and "minival accuracy (8 images" in notes[0]
    assert metrics["test_accuracy"] is None and 0 <= metrics["minival_accuracy"] <= 1
    saved = json.loads((Path(metrics["folder"]) / "metrics.json").read_text())
    assert saved["test_accuracy"] is None and saved["minival_accuracy"] == metrics["minival_accuracy"]
    assert any("16 train / 8 minival / no test images" in r.getMessage() for r in caplog.records)


def test_nas_train_on_a_folder_with_test_reports_test_accuracy(tmp_path: Path, caplog) -> None:
    write_folder(tmp_path / "d" / "train", per_class=12)
    write_folder(tmp_path / "d" / "test", per_class=3, seed=1)
    with caplog.at_level(logging.INFO, logger="effnas"):
        metrics = run_train(train_cfg(tmp_path, tmp_path / "d"))
    assert not [r for r in caplog.records if r.levelno == logging.WARNING and "test split" in r.getMessage()]
    assert 0 <= metrics["test_accuracy"] <= 1
    assert any("16 train / 8 minival / 6 test images" in r.getMessage() for r in caplog.records)


def test_a_folder_taken_by_another_run_during_training_is_not_written_over(tmp_path: Path, monkeypatch) -> None:
    """Two runs of the same name started in the same second: the one that finishes second gets its own folder."""
    import nas.trainone as trainone
    write_folder(tmp_path / "flowers", per_class=12)
    taken = []

    def and_meanwhile(spec, data, cfg, **kw):  # the other run's folder appears while this one trains
        stamp = trainone._dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        for name in (f"tiny_{stamp}", f"tiny_{stamp}_2"):
            (tmp_path / "train" / name).mkdir(parents=True)
            (tmp_path / "train" / name / "metrics.json").write_text("the other run's")
            taken.append(tmp_path / "train" / name)
        return real(spec, data, cfg, **kw)

    real = trainone.train_and_evaluate
    monkeypatch.setattr(trainone, "train_and_evaluate", and_meanwhile)
    fixed = trainone._dt.datetime.now()
    monkeypatch.setattr(trainone, "_dt", SimpleNamespace(datetime=SimpleNamespace(now=lambda: fixed)))
    metrics = run_train(train_cfg(tmp_path, tmp_path / "flowers"))
    assert Path(metrics["folder"]) not in taken and Path(metrics["folder"]).name.endswith("_3")
    assert [(t / "metrics.json").read_text() for t in taken] == ["the other run's"] * 2
    assert json.loads((Path(metrics["folder"]) / "metrics.json").read_text())["name"] == "tiny"


@pytest.mark.parametrize("signame, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_nas_train_interrupted_exits_130_or_143_and_saves_nothing(tmp_path, signame, code):
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(["nas-train", f"results_dir={tmp_path}", "proxy.train_size=4096", "proxy.epochs=50",
                             "proxy.threads=1"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # training starts after this line
        if "nas-train:" in line:
            break
    time.sleep(2)
    proc.send_signal(getattr(signal, signame))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and signame in lines[0] and "Traceback" not in err, err
    assert not list((tmp_path / "train").glob("*/model.pt")) if (tmp_path / "train").exists() else True


def _nas_train(tmp: Path, results: Path, *extra: str):
    import subprocess

    return subprocess.Popen(["nas-train", f"results_dir={results}", "name=b0", "proxy.train_size=256",
                             "proxy.minival_size=100", "proxy.epochs=12", "proxy.threads=1", "proxy.eval_batch_size=500",
                             *extra], cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_nas_train_interrupted_after_an_epoch_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path):
    """A real Ctrl-C after epoch 2: exit 130, one line naming the checkpoint; the same command again
    resumes after the saved epoch and ends with the weights (and test accuracy) of a run never
    interrupted; the checkpoint is gone once the results are written."""
    import signal

    proc = _nas_train(tmp_path, tmp_path / "r")
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "epoch 2/12" in line:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(seen) + err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    ckpts = list((tmp_path / "r" / "train" / "checkpoints").glob("b0-*.pt"))
    assert len(ckpts) == 1 and "Traceback" not in err, err
    assert lines == [f"error: interrupted by SIGINT; the finished epochs are saved in {ckpts[0]}; run the same "
                     f"command again to resume"], err
    saved = torch.load(ckpts[0], weights_only=True)["epoch"]
    assert 2 <= saved < 12
    assert not list((tmp_path / "r" / "train").glob("*/model.pt"))

    proc = _nas_train(tmp_path, tmp_path / "r")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert f"resuming after epoch {saved}/12 from {ckpts[0]}" in err
    assert not list((tmp_path / "r" / "train" / "checkpoints").glob("*.pt"))
    (resumed,) = (tmp_path / "r" / "train").glob("b0_*/metrics.json")
    resumed = json.loads(resumed.read_text())
    assert [h["epoch"] for h in resumed["history"]] == list(range(1, 13))

    whole = run_train({"results_dir": str(tmp_path / "w"), "name": "b0", "proxy": {
        "train_size": 256, "minival_size": 100, "epochs": 12, "threads": 1, "eval_batch_size": 500}})
    assert resumed["test_accuracy"] == whole["test_accuracy"]
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in whole["history"]]
    a = torch.load(Path(resumed["folder"]) / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(Path(whole["folder"]) / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_same_nas_train_twice_at_once_is_refused_in_one_line_and_the_first_goes_on(tmp_path):
    """A second process with the same command while the first trains: exit 2, one line naming the first
    process; the first finishes as if alone and leaves no lock behind."""
    import signal

    first = _nas_train(tmp_path, tmp_path / "r", "proxy.epochs=3")
    seen = []
    for line in first.stderr:
        seen.append(line)
        if "epoch 1/3" in line:
            break
    first.send_signal(signal.SIGSTOP)  # still training (and holding its lock) whatever the machine's speed
    try:
        second = _nas_train(tmp_path, tmp_path / "r", "proxy.epochs=3")
        out, err = second.communicate(timeout=120)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 2 and "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    (ckpt,) = (tmp_path / "r" / "train" / "checkpoints").glob("b0-*.pt")
    assert lines == [f"error: another nas-train ({socket.gethostname()}:{first.pid}) is training b0 with the same "
                     f"data, recipe and seed now (checkpoint {ckpt}); wait for it to finish, or change seed= or pass "
                     f"checkpoint=false to train a second copy"], err
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, "".join(seen) + err[-2000:]
    (metrics,) = (tmp_path / "r" / "train").glob("b0_*/metrics.json")
    assert [h["epoch"] for h in json.loads(metrics.read_text())["history"]] == [1, 2, 3]
    assert not list((tmp_path / "r" / "train" / "checkpoints").iterdir())
