"""Malformed command lines through each of the five CLIs: exit 2, exactly one stderr line, naming the
key -- types, typos, unknown keys and groups, missing group options, ranges and override grammar.

The four Hydra commands are run in-process through :func:`effnas.cli.run_app` with a task that must
never be reached (the checks happen before Hydra runs); a few go through the real console scripts.
"""

from __future__ import annotations

import subprocess

import pytest

import nas.config  # noqa: F401 -- root schemas
import scaling_search.config  # noqa: F401
from effnas.cli import check_command_line, run_app

PROXY = [  # every command has the proxy and dataset groups
    ("proxy.epoch=2", "proxy.epoch"), ("proxy.epochs=abc", "proxy.epochs"), ("proxy.epochs=0", "proxy.epochs"),
    ("proxy.epochs=1.5", "proxy.epochs"), ("proxy.lr=-1", "proxy.lr"), ("proxy.lr=fast", "proxy.lr"),
    ("proxy.optimizer=lamb", "proxy.optimizer"), ("proxy.schedule=step", "proxy.schedule"),
    ("proxy.batch_size=0", "proxy.batch_size"), ("proxy.resolution=16", "proxy.resolution"),
    ("proxy.device=tpu", "proxy.device"), ("proxy.threads=0", "proxy.threads"),
    ("proxy.label_smoothing=1.0", "proxy.label_smoothing"), ("proxy.bn_momentum=0", "proxy.bn_momentum"),
    ("proxy.flip=maybe", "proxy.flip"), ("proxy.train_size=-5", "proxy.train_size"),
    ("proxy.minival_size=x", "proxy.minival_size"), ("proxy.warmup_epochs=-1", "proxy.warmup_epochs"),
    ("proxy.momentum=1.5", "proxy.momentum"), ("proxy.eval_batch_size=0", "proxy.eval_batch_size"),
    ("proxy=foo", "proxy"), ("dataset=foo", "dataset"), ("dataset.foo=1", "dataset.foo"),
    ("dataset.download=maybe", "dataset.download"), ("proxy.epochs=[", "proxy.epochs"),
    ("proxy.epochs=1,2", "proxy.epochs"), ("proxy.epochs=${oops", "proxy.epochs"), ("foo=1", "foo"),
    ("+foo=1", "foo"), ("+proxy.foo=1", "proxy.foo"), ("results_dirr=x", "results_dirr"),
    ("hydra/launcher=nope", "hydra/launcher"),
]
CASES = {
    "nas_search": PROXY + [
        ("search.n_trial=3", "search.n_trial"), ("search.n_trials=0", "search.n_trials"),
        ("search.n_trials=abc", "search.n_trials"), ("search.timeout=-1", "search.timeout"),
        ("search.seed=-1", "search.seed"), ("search.study_name=../../x", "search.study_name"),
        ("search.warm_start=[nope]", "search.warm_start"), ("search.multi_objective=maybe", "search.multi_objective"),
        ("sampler=foo", "sampler"), ("sampler.n_startup_trials=-1", "sampler.n_startup_trials"),
        ("sampler.foo=1", "sampler.foo"), ("pruner=foo", "pruner"), ("pruner.lower=2", "pruner"),
        ("storage=foo", "storage"), ("storage.max_retry=-1", "storage.max_retry"), ("storage.lock=nfs", "storage.lock"),
        ("storage.url=postgresql://u:pw@h/db", "add storage=postgres"), ("storage.url=sqlite:///s.db", "add storage=sqlite"),
        ("dataset=cifar10", "dataset.root is not set: dataset=cifar10 has no default folder; fix: dataset.root=<folder>"),
        ("dataset=image_folder", "dataset.root is not set: dataset=image_folder"),
        ("dataset.root=???", "dataset.root is not set: pass a folder, or null for dataset=fashion_mnist's own ("),
        ("search.study_name=???", "search.study_name is not set: pass search.study_name=<value>"),
        ("objective=foo", "objective"), ("objective.w=nan", "objective.w"), ("objective.w=0.1", "objective.w"),
        ("objective.metric=energy", "objective.metric"), ("objective.target=-5", "objective.target"),
        ("objective.max_flops=-1", "objective.max_flops"), ("objective.max_flops=big", "objective.max_flops"),
        ("space.kernels=[2]", "space.kernels"), ("space.foo=1", "space.foo"), ("worker=abc", "worker"),
        ("worker=-1", "worker"), ("workers=0", "workers"), ("worker=range(2)", "worker"),
    ],
    "nas_train": PROXY + [
        ("arch=nope", "arch"), ("arch=r1_k3_s11_e1_i32_o16_zz", "arch"), ("arch=/no/such/best.json", "arch"),
        ("resolution=16", "resolution"), ("seed=-1", "seed"), ("seed=x", "seed"), ("train.epochs=3", "train"),
    ],
    "scale_search": PROXY + [
        ("grid.stepp=0.1", "grid.stepp"), ("grid.step=0", "grid.step"), ("grid.tol=-1", "grid.tol"),
        ("grid.alpha=[2,1]", "grid.alpha"), ("grid.alpha=[0.5,1]", "grid.alpha"), ("grid.mode=foo", "grid.mode"),
        ("grid.target=1", "grid.target"), ("alpha=1.1", "alpha"), ("alpha=0.5", "alpha"), ("base=nope", "base"),
        ("base_resolution=16", "base_resolution"), ("baselines=maybe", "baselines"), ("search.seed=-1", "search.seed"),
        ("search.timeout=0", "search.timeout"), ("storage=foo", "storage"), ("storage.lock=x", "storage.lock"),
        ("search.study_name=a/b", "search.study_name"),
    ],
    "scale_family": PROXY + [
        ("coefficients=nope.yaml", "coefficients"), ("coefficients={alpha: 0.5, beta: 1, gamma: 1}", "coefficients"),
        ("max_phi=-1", "max_phi"), ("dropout=[0.2]", "dropout"), ("dropout=[0.2,1.5]", "dropout"),
        ("train.upto=-1", "train.upto"), ("train.upto=9", "train.upto"), ("train.seed=-1", "train.seed"),
        ("num_classes=0", "num_classes"), ("in_channels=0", "in_channels"), ("base=nope", "base"),
        ("base_resolution=16", "base_resolution"), ("study_name=../x", "study_name"), ("max_phi=x", "max_phi"),
    ],
}
FLAGS = [(["--cfg"], "--cfg"), (["--cfg", "nope"], "--cfg"), (["-x"], "-x"), (["--nope"], "--nope")]


def _never(cfg):
    raise AssertionError("the task ran: the command line should have been refused first")


@pytest.mark.parametrize("app", sorted(CASES))
def test_at_least_30_malformed_command_lines_each(app):
    assert len(CASES[app]) + len(FLAGS) >= 30


@pytest.mark.parametrize("app, override, key",
                         [(app, o, k) for app, cases in sorted(CASES.items()) for o, k in cases])
def test_malformed_override_is_one_line_naming_the_key(app, override, key, capsys):
    assert run_app(app, _never, [override]) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and key in lines[0], lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize("app", sorted(CASES))
@pytest.mark.parametrize("argv, key", FLAGS)
def test_bad_flags_are_one_line(app, argv, key, capsys):
    assert run_app(app, _never, argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and key in lines[0], lines


REPORT = [
    (["--top", "0"], "--top"), (["--top", "x"], "--top"), (["--top", "-1"], "--top"), (["--top", "1.5"], "--top"),
    (["--top", ""], "--top"), (["--top"], "--top"), (["--out"], "--out"), (["--outt", "d"], "--outt"),
    (["-x", "."], "-x"), (["--nope", "."], "--nope"), ([], "FOLDER"), (["--top", "3"], "FOLDER"),
    (["--no-plots"], "FOLDER"), (["--no-plots=yes"], "--no-plots"), (["/no/such/folder"], "/no/such/folder"),
    (["/no/such/a", "/no/such/b"], "/no/such/a"), (["--top", "2", "/no/such"], "/no/such"),
    (["--top=0", "/tmp"], "--top"), (["--top=abc"], "--top"), (["--out", "d", "--top", "0"], "--top"),
    (["-h=1"], "-h"), (["--top", "1e3"], "--top"), (["--top", "0x10"], "--top"), (["--top", "  "], "--top"),
    (["--top", "-0"], "--top"), (["--top", "3", "--top", "0"], "--top"), (["--out="], "FOLDER"),
    (["--no-plots", "--top", "nan"], "--top"), (["--top", "inf"], "--top"), (["--top", "10", "/nonexistent"], "/nonexistent"),
]


def test_at_least_30_malformed_report_command_lines():
    assert len(REPORT) >= 30


@pytest.mark.parametrize("argv, key", REPORT)
def test_report_errors_are_one_line(argv, key, capsys, tmp_path, monkeypatch):
    from report.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and key in lines[0], lines


@pytest.mark.parametrize("command, override, key", [
    ("nas-search", "search.n_trial=3", "search.n_trials"), ("nas-train", "proxy.epochs=0", "proxy.epochs"),
    ("scale-search", "grid.stepp=0.1", "grid.step"), ("scale-family", "foo=1", "foo"), ("nas-report", "--top=0", "--top"),
])
def test_console_scripts(command, override, key, tmp_path):
    proc = subprocess.run([command, override], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and key in lines[0], proc.stderr
    assert not list(tmp_path.iterdir())  # nothing written


def test_cfg_job_prints_the_config_with_passwords_redacted(capsys):
    url = "storage.url=postgresql://u:Pw-s3cret@h/db"
    for which in ("job", "all"):
        assert run_app("nas_search", _never, ["--cfg", which, "storage=postgres", url]) == 0
        out = capsys.readouterr().out
        assert "Pw-s3cret" not in out and "postgresql://u:***@h/db" in out


def test_a_database_url_with_the_journal_storage_is_refused_not_made_a_file(tmp_path, monkeypatch, capsys):
    """storage.url=postgresql://... without storage=postgres once became a journal file path under
    ./postgresql:/ -- the password in a folder name -- and the search ran on it."""
    monkeypatch.chdir(tmp_path)
    assert run_app("nas_search", _never, ["storage.url=postgresql://u:Pw-s3cret@h/db"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == ("error: storage.url 'postgresql://u:***@h/db' is a database URL, but storage=journal takes the "
                    "path of a journal file; add storage=postgres to use the database")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("command", ["nas-search", "nas-train", "scale-search", "scale-family"])
def test_a_results_dir_that_is_a_file_is_one_line_before_any_work(command, tmp_path):
    (tmp_path / "afile").write_text("mine\n")
    proc = subprocess.run([command, "results_dir=afile/runs"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [f"error: results_dir=afile/runs: {tmp_path / 'afile'} is a file; expected a "
                                        f"folder (made where missing)"], proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"] and (tmp_path / "afile").read_text() == "mine\n"


@pytest.mark.parametrize("app", sorted(CASES))
def test_a_launcher_without_multirun_is_refused_not_run_here(app, capsys):
    """Hydra uses a launcher only with -m: without it the command would quietly run in this process."""
    assert run_app(app, _never, ["hydra/launcher=slurm"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: hydra/launcher=slurm: ") and "add -m" in lines[0], lines
    assert ("'worker=range(2)'" in lines[0]) == (app in ("nas_search", "scale_search"))
    # an unknown launcher is named as such, not told to add -m
    assert run_app(app, _never, ["hydra/launcher=nope"]) == 2
    assert "add -m" not in capsys.readouterr().err
    # with -m (or the default launcher) the command line passes
    check_command_line(app, ["-m", "hydra/launcher=slurm"])
    check_command_line(app, ["hydra/launcher=basic"])
