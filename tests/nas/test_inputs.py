"""Bad inputs that pass the command-line checks but fail once the run starts: one line, exit 2,
nothing written -- and the notes a run gives instead of silently changing what it was told."""

from __future__ import annotations

import json

import pytest

from effnas.cli import run_app
from nas.cli import search_task, train_task
from search_space import reference_spec

TINY = ["proxy.train_size=256", "proxy.minival_size=200", "proxy.epochs=1", "proxy.threads=1",
        "proxy.bn_recalibrate_batches=2", "proxy.eval_batch_size=200"]


def _one_line(capsys, *needles):
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ") or "Traceback" in ln]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_cuda_without_cuda_is_one_line_and_writes_no_trial(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the case cannot happen here")
    code = run_app("nas_search", search_task, [f"results_dir={tmp_path}", "proxy.device=cuda", *TINY])
    assert code == 2
    _one_line(capsys, "proxy.device=cuda", "no CUDA")
    assert not list(tmp_path.rglob("*.journal"))


def test_a_directory_as_journal_url_is_one_line(tmp_path, capsys):
    folder = tmp_path / "dir"
    folder.mkdir()
    code = run_app("nas_search", search_task, [f"results_dir={tmp_path}", f"storage.url={folder}", *TINY,
                                               "search.n_trials=1"])
    assert code == 2
    _one_line(capsys, "storage.url", "is a directory")


def test_nas_train_takes_the_full_string_best_json_prints(tmp_path, capsys):
    """A scaled B0's full string is far longer than a file name may be: never looked up on disk."""
    from search_space import scale_spec

    spec = scale_spec(reference_spec("efficientnet-b0", num_classes=10, in_channels=1), width=1.1, depth=1.2)
    text = spec.replace(resolution=32).to_string()
    assert len(text) > 255
    code = run_app("nas_train", train_task, [f"results_dir={tmp_path}", f"arch={text}", *TINY, "name=long"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads(next(tmp_path.rglob("metrics.json")).read_text())
    assert metrics["arch"] == text


def test_an_arch_with_another_head_says_so_in_one_line(tmp_path, capsys):
    text = reference_spec("efficientnet-b0", num_classes=3, in_channels=3).replace(resolution=32).to_string()
    code = run_app("nas_train", train_task, [f"results_dir={tmp_path}", f"arch={text}", *TINY, "name=head"])
    assert code == 0
    notes = [ln for ln in capsys.readouterr().err.splitlines() if "input channels" in ln]
    assert len(notes) == 1 and "3 classes / 3 input channels" in notes[0] and "10 / 1" in notes[0], notes
    metrics = json.loads(next(tmp_path.rglob("metrics.json")).read_text())
    assert "classes=10 channels=1" in metrics["arch"]
