"""The proxy trainer on real Fashion-MNIST: it learns, reports per epoch, stops on NaN, resumes
from its checkpoint exactly."""

from __future__ import annotations

import re

import pytest
import torch

from effnas.data import load_splits
from effnas.train import CheckpointError, Diverged, TrainConfig, evaluate, train_and_evaluate
from effnas.units import fmt_seconds
from search_space import reference_spec, scale_spec


@pytest.fixture(scope="module")
def data():
    return load_splits("fashion_mnist", resolution=32, minival_size=500, train_size=1024, seed=0)


@pytest.fixture(scope="module")
def spec():
    b0 = reference_spec("efficientnet-b0", num_classes=10, in_channels=1)
    return scale_spec(b0, width=0.5, depth=0.5, resolution=32)


def test_short_training_beats_chance_and_reports_every_epoch(data, spec):
    seen = []
    result = train_and_evaluate(spec, data, TrainConfig(epochs=2, threads=1),
                                on_epoch=lambda e, a: seen.append((e, a)), keep_model=True)
    assert [e for e, _ in seen] == [1, 2]
    assert result.accuracy == seen[-1][1] and result.epochs_done == 2
    assert result.accuracy > 0.4, result.history  # 10 classes: chance is 0.1
    assert result.train_seconds > 0 and result.images_per_second > 0
    # the model is channels_last and its test accuracy is measurable
    conv = result.model.stem.conv.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert 0.3 < evaluate(result.model, data.test.subset(range(500)), data.mean, data.std) <= 1


def test_validating_only_the_last_epoch(data, spec):
    """validate_every_epoch=False: one validation (on the split asked for), after the last epoch."""
    seen = []
    result = train_and_evaluate(spec, data, TrainConfig(epochs=2, threads=1), on_epoch=lambda e, a: seen.append(e),
                                keep_model=True, eval_split="test", validate_every_epoch=False)
    assert seen == [2]
    assert [h["accuracy"] is None for h in result.history] == [True, False]
    assert result.accuracy == result.history[-1]["accuracy"] > 0.4
    assert result.accuracy == evaluate(result.model, data.test, data.mean, data.std)


def test_evaluate_folds_a_copy_and_gets_the_unfolded_accuracy(data, spec):
    """evaluate() scores a BN-folded copy of an EffNet: the accuracy of the network as it is, whose
    BN modules, weights and statistics are left untouched (training goes on after each epoch)."""
    from effnas.data import Batches

    model = train_and_evaluate(spec, data, TrainConfig(epochs=1, threads=1), keep_model=True).model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    accuracy = evaluate(model, data.test, data.mean, data.std)
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == sum(
        1 for k in before if k.endswith("running_var"))
    with torch.inference_mode():  # the plain evaluation, BN as modules of their own
        correct = sum(int((model(x).argmax(1) == y).sum())
                      for x, y in Batches(data.test, 500, data.mean, data.std, shuffle=False, augment=False))
    assert accuracy == correct / len(data.test) > 0.3


def test_bn_recalibration_fixes_the_short_run_pitfall(data, spec):
    """With few steps, running BN statistics are far off; re-estimating them restores accuracy."""
    cfg = dict(epochs=1, threads=1, bn_momentum=0.01)  # TF's 0.99
    stale = train_and_evaluate(spec, data, TrainConfig(**cfg, bn_recalibrate_batches=0)).accuracy
    fixed = train_and_evaluate(spec, data, TrainConfig(**cfg, bn_recalibrate_batches=8)).accuracy
    assert fixed > stale + 0.2, (stale, fixed)


def test_same_seed_same_result(data, spec):
    cfg = TrainConfig(epochs=1, threads=1, seed=3)
    a = train_and_evaluate(spec, data, cfg).accuracy
    b = train_and_evaluate(spec, data, cfg).accuracy
    assert a == b


def test_nan_loss_raises_diverged(data, spec):
    with pytest.raises(Diverged, match="loss became"):
        train_and_evaluate(spec, data, TrainConfig(epochs=1, lr=1e12, threads=1))


def test_callback_can_stop_training(data, spec):
    class Stop(Exception):
        pass

    def on_epoch(epoch, acc):
        raise Stop()

    with pytest.raises(Stop):
        train_and_evaluate(spec, data, TrainConfig(epochs=3, threads=1), on_epoch=on_epoch)


@pytest.mark.parametrize("kwargs, needle", [
    ({"epochs": 0}, "proxy.epochs"), ({"optimizer": "lamb"}, "proxy.optimizer"),
    ({"schedule": "step"}, "proxy.schedule"), ({"lr": -1.0}, "proxy.lr"),
    ({"bn_momentum": 0.0}, "proxy.bn_momentum"), ({"threads": 0}, "proxy.threads"),
    ({"device": "tpu"}, "proxy.device"), ({"label_smoothing": 1.0}, "proxy.label_smoothing"),
])
def test_invalid_train_config(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        TrainConfig(**kwargs)


def test_spec_must_match_the_dataset(data):
    with pytest.raises(ValueError, match="classes"):
        train_and_evaluate(reference_spec("efficientnet-b0"), data, TrainConfig(threads=1))


@pytest.mark.parametrize("optimizer", ["rmsprop", "sgd", "adamw"])
def test_every_optimizer_trains(data, spec, optimizer):
    small = data.__class__(data.train.subset(range(256)), data.minival, data.test, data.mean, data.std,
                           data.name)
    result = train_and_evaluate(spec, small, TrainConfig(epochs=1, optimizer=optimizer, threads=1,
                                                         schedule="exponential", warmup_epochs=0.5))
    assert 0 <= result.accuracy <= 1


class _Stop(Exception):
    pass


def _stop_after(stop_epoch):
    def on_epoch(epoch, acc):
        if epoch == stop_epoch:
            raise _Stop()
    return on_epoch


@pytest.fixture(scope="module")
def small(data):
    return data.__class__(data.train.subset(range(512)), data.minival, data.test, data.mean, data.std, data.name)


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(small, spec, tmp_path):
    """Stopped after epoch 1, then after epoch 2, then resumed to the end: the same weights, losses
    and accuracies, bit for bit, as one run (dropout, drop-connect, crops and flips draw from the
    generators the checkpoint restores)."""
    cfg = TrainConfig(epochs=3, threads=1, seed=5)
    whole = train_and_evaluate(spec, small, cfg, keep_model=True)
    ckpt = tmp_path / "run.pt"
    for stop in (1, 2):
        with pytest.raises(_Stop):
            train_and_evaluate(spec, small, cfg, on_epoch=_stop_after(stop), checkpoint=ckpt)
        assert torch.load(ckpt, weights_only=True)["epoch"] == stop
    said = []
    resumed = train_and_evaluate(spec, small, cfg, keep_model=True, checkpoint=ckpt, progress=said.append)
    assert said[0] == f"resuming after epoch 2/3 from {ckpt}"
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert [(h["loss"], h["accuracy"]) for h in resumed.history] == [(h["loss"], h["accuracy"]) for h in whole.history]
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.accuracy == whole.accuracy and resumed.epochs_done == 3
    # a finished checkpoint (the caller had not removed it yet) gives the result without training
    again = train_and_evaluate(spec, small, cfg, checkpoint=ckpt, on_epoch=_stop_after(3))
    assert again.accuracy == whole.accuracy and again.history == resumed.history


def test_each_epoch_says_how_long_the_rest_will_take(small, spec):
    """The ETA is the epochs left times the mean epoch so far; the last epoch has none."""
    said = []
    result = train_and_evaluate(spec, small, TrainConfig(epochs=3, threads=1), progress=said.append)
    assert [line.split(":")[0] for line in said] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    seconds = [h["seconds"] for h in result.history]
    for epoch, line in enumerate(said[:2], start=1):
        eta = (3 - epoch) * sum(seconds[:epoch]) / epoch
        assert line.endswith(f", ETA {fmt_seconds(eta)}") and re.search(r", ETA \d+m\d\ds$", line), line
    assert "ETA" not in said[2] and said[2].endswith(" img/s")


@pytest.mark.parametrize("change, needle", [({"seed": 6}, "train.seed (5 there, 6 here)"),
                                            ({"lr": 0.3}, "train.lr (None there, 0.3 here)"),
                                            ({"epochs": 4}, "train.epochs (1 there, 4 here)")])
def test_a_checkpoint_of_another_training_is_refused_and_kept(small, spec, tmp_path, change, needle):
    ckpt = tmp_path / "run.pt"
    train_and_evaluate(spec, small, TrainConfig(epochs=1, threads=1, seed=5), checkpoint=ckpt)
    before = ckpt.read_bytes()
    with pytest.raises(CheckpointError, match="belongs to another training") as info:
        train_and_evaluate(spec, small, TrainConfig(**{"epochs": 1, "threads": 1, "seed": 5, **change}),
                           checkpoint=ckpt)
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert ckpt.read_bytes() == before
    # another architecture, or other data, likewise; threads and the evaluation batch may differ
    with pytest.raises(CheckpointError, match=r"arch \("):
        train_and_evaluate(scale_spec(spec, width=0.75), small, TrainConfig(epochs=1, threads=1, seed=5), checkpoint=ckpt)
    fewer = small.__class__(small.train.subset(range(256)), small.minival, small.test, small.mean, small.std, small.name)
    with pytest.raises(CheckpointError, match=r"data.train_images \(512 there, 256 here\)"):
        train_and_evaluate(spec, fewer, TrainConfig(epochs=1, threads=1, seed=5), checkpoint=ckpt)
    train_and_evaluate(spec, small, TrainConfig(epochs=1, threads=2, seed=5, eval_batch_size=100), checkpoint=ckpt)


def test_a_checkpoint_half_written_by_a_killed_process_is_swept(small, spec, tmp_path):
    import socket
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid no process holds now
    stale = tmp_path / f".run.pt.{socket.gethostname()}-{dead.pid}.abc.tmp"  # atomic_write's temp name
    stale.write_bytes(b"half a checkpoint")
    train_and_evaluate(spec, small, TrainConfig(epochs=1, threads=1), checkpoint=tmp_path / "run.pt")
    assert not stale.exists() and (tmp_path / "run.pt").exists()


def test_an_unreadable_checkpoint_is_one_clear_error(small, spec, tmp_path):
    ckpt = tmp_path / "run.pt"
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=f"checkpoint {ckpt} cannot be read .*remove it to train from the start") \
            as info:
        train_and_evaluate(spec, small, TrainConfig(epochs=1, threads=1), checkpoint=ckpt)
    assert "\n" not in str(info.value)
    assert ckpt.read_bytes() == b"not a checkpoint"
