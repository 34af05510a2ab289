"""The supernet cache: one training per key, keys that follow the protocol, resume after an
interrupt, and two processes that race on first use training it once."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import effnas.supernet.cache as cache
from effnas.study import Interrupted
from effnas.supernet.train import train_supernet

from .conftest import TOY


RACE = TOY + r'''
import json, logging, sys, time
import effnas.supernet.cache as cache
from effnas.supernet.cache import load_or_train
train = cache.train_supernet
if sys.argv[2] == "slow":  # hold the lock long enough for the other process to find it taken
    cache.train_supernet = lambda *a, **k: (time.sleep(float(sys.argv[3])), train(*a, **k))[1]
if sys.argv[2] == "hang":  # stop for good once the first epoch is checkpointed (to be killed there)
    def hanging(*a, heartbeat=None, **k):
        def beat():
            heartbeat()
            if a[5].exists():
                time.sleep(3600)
        return train(*a, heartbeat=beat, **k)
    cache.train_supernet = hanging
lines = []
class Keep(logging.Handler):
    def emit(self, record):
        lines.append(record.getMessage())
logging.getLogger("effnas").addHandler(Keep())
logging.getLogger("effnas").setLevel(logging.INFO)
data = toy_data()
net, path = load_or_train(SPACE, data, identity(data), PROXY, SUPERNET, 0, sys.argv[1])
print(json.dumps({"path": str(path), "trained": any(l.startswith("supernet: training") for l in lines),
                  "lines": lines}))
'''



def test_same_protocol_same_key_other_protocol_other_key(toy):
    data = toy["toy_data"]()
    key = cache.supernet_key(toy["identity"](data))
    assert key == cache.supernet_key(toy["identity"](toy["toy_data"]()))  # same images: same key
    others = {
        "data": toy["identity"](toy["toy_data"](seed=1)),
        "proxy recipe": toy["identity"](data, proxy=dataclasses.replace(toy["PROXY"], lr=0.05)),
        "resolution": toy["identity"](data, proxy=dataclasses.replace(toy["PROXY"], resolution=64)),
        "supernet epochs": toy["identity"](data, supernet=dataclasses.replace(toy["SUPERNET"], epochs=3)),
        "distillation": toy["identity"](data, supernet=dataclasses.replace(toy["SUPERNET"], distill=True)),
        "space": toy["identity"](data, space=type(toy["SPACE"]).from_config({}, num_classes=10, in_channels=1)),
        "seed": toy["identity"](data, seed=1),
    }
    keys = {what: cache.supernet_key(ident) for what, ident in others.items()}
    assert key not in keys.values() and len(set(keys.values())) == len(keys), keys
    # what only changes how candidates are scored, or where the cache is, does not retrain
    same = toy["identity"](data, supernet=dataclasses.replace(toy["SUPERNET"], recalibrate_batches=7,
                                                              eval_size=None, cache_dir="/elsewhere"))
    assert cache.supernet_key(same) == key
    for change in ({"threads": 2}, {"bn_recalibrate_batches": 3}, {"eval_batch_size": 7}):
        assert cache.supernet_key(toy["identity"](data, proxy=dataclasses.replace(toy["PROXY"], **change))) == key


def test_second_load_does_not_train(toy, tmp_path, monkeypatch):
    data = toy["toy_data"]()
    ident = toy["identity"](data)
    net, path = cache.load_or_train(toy["SPACE"], data, ident, toy["PROXY"], toy["SUPERNET"], 0, tmp_path)
    assert path == tmp_path / cache.supernet_key(ident) / "supernet.pt" and path.is_file()
    assert json.loads((path.parent / "identity.json").read_text())["supernet"]["epochs"] == 2
    assert not (path.parent / "checkpoint.pt").exists() and not os.path.lexists(path.parent / "train.lock")
    assert [h["epoch"] for h in net.history] == [1, 2]

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(cache, "train_supernet", no_training)
    again, path2 = cache.load_or_train(toy["SPACE"], data, ident, toy["PROXY"], toy["SUPERNET"], 0, tmp_path)
    assert path2 == path
    for (name, a), b in zip(net.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


def test_interrupted_training_resumes_from_its_checkpoint(toy, tmp_path):
    from effnas.supernet.model import SuperNet

    data = toy["toy_data"]()
    checkpoint = tmp_path / "checkpoint.pt"
    steps = []

    def interrupt_in_epoch_two() -> None:
        steps.append(1)
        if len(steps) == 4:  # 3 steps an epoch: the first step of epoch 2
            raise Interrupted("SIGTERM")

    torch.manual_seed(0)
    with pytest.raises(Interrupted):
        train_supernet(SuperNet(toy["SPACE"]), data, toy["SUPERNET"], toy["PROXY"], 0, checkpoint,
                       heartbeat=interrupt_in_epoch_two)
    assert torch.load(checkpoint, weights_only=False)["epoch"] == 1
    resumed = train_supernet(SuperNet(toy["SPACE"]), data, toy["SUPERNET"], toy["PROXY"], 0, checkpoint)
    assert [h["epoch"] for h in resumed] == [1, 2]
    # the same as a run that was never interrupted: each epoch's draws come from its own seed
    torch.manual_seed(0)
    straight_net = SuperNet(toy["SPACE"])
    straight = train_supernet(straight_net, data, toy["SUPERNET"], toy["PROXY"], 0, tmp_path / "other.pt")
    assert [round(h["loss"], 5) for h in straight] == [round(h["loss"], 5) for h in resumed]


def test_an_interrupt_releases_the_lock(toy, tmp_path, monkeypatch):
    data = toy["toy_data"]()
    ident = toy["identity"](data)

    def interrupted(*args, **kwargs):
        raise Interrupted("SIGINT")

    monkeypatch.setattr(cache, "train_supernet", interrupted)
    with pytest.raises(Interrupted):
        cache.load_or_train(toy["SPACE"], data, ident, toy["PROXY"], toy["SUPERNET"], 0, tmp_path)
    folder = tmp_path / cache.supernet_key(ident)
    assert not os.path.lexists(folder / "train.lock") and not (folder / "supernet.pt").exists()


def test_two_processes_train_it_once(tmp_path):
    """The second process starts while the first holds the lock: it waits, then loads."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[3]), os.environ.get("PYTHONPATH", "")])}

    def start(*args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", RACE, str(tmp_path), *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)

    first = start("slow", "15")
    deadline = time.monotonic() + 300
    while not any(os.path.lexists(d / "train.lock") for d in tmp_path.iterdir()):  # a dangling symlink
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1][-3000:]
        time.sleep(0.1)
    second = start("fast")
    outs = []
    for p in (first, second):
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert outs[0]["path"] == outs[1]["path"]
    assert [o["trained"] for o in outs] == [True, False], outs
    assert any("another process is training" in line for line in outs[1]["lines"]), outs[1]
    assert any("trained by another process meanwhile" in line for line in outs[1]["lines"]), outs[1]
    assert len(list(tmp_path.iterdir())) == 1  # one key, one folder


def test_a_killed_trainer_is_resumed_by_the_next_process(tmp_path):
    """SIGKILL after the first epoch: the lock's holder is dead, so the next process breaks the lock
    at once and resumes from the checkpoint instead of waiting or starting over."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[3]), os.environ.get("PYTHONPATH", "")])}
    first = subprocess.Popen([sys.executable, "-c", RACE, str(tmp_path), "hang"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob("*/checkpoint.pt")):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1][-3000:]
        time.sleep(0.1)
    time.sleep(0.5)  # the checkpoint is renamed into place whole; let the hang begin
    first.kill()
    first.communicate(timeout=60)
    [folder] = list(tmp_path.iterdir())
    assert os.path.lexists(folder / "train.lock")  # left behind by the dead process
    second = subprocess.run([sys.executable, "-c", RACE, str(tmp_path), "fast"], capture_output=True, text=True,
                            env=env, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    out = json.loads(second.stdout.strip().splitlines()[-1])
    assert out["trained"] and any("resuming after epoch 1/2" in line for line in out["lines"]), out
    assert (folder / "supernet.pt").is_file() and not os.path.lexists(folder / "train.lock")
