"""The worker loop's bookkeeping at a flat cost: throttled exports that stay consistent with the
storage (at the end of a run, under SIGTERM, at least every interval while trials finish), the
incremental budget counter, one storage write of the loop's own per trial, the start time of a
worker process recorded once in the study.

``nas-search`` runs here with the trainer patched out (a made-up accuracy, at once or after a
short sleep) on a tiny synthetic dataset: everything else is the real path.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import zlib
from pathlib import Path

import optuna
import pandas as pd
import torch
from optuna.trial import TrialState

import effnas.evaluate
import effnas.results
import nas.search
from effnas.config import as_config
from effnas.data import DataSplits
from effnas.data.core import ImageDataset
from effnas.progress import ProgressReporter
from effnas.results import Throttle, best_trial, export_study, trials_frame
from effnas.study import make_storage, recover_dead_local_workers, run_worker, storage_config
from effnas.study.enqueue import BudgetCounter, budget_used, counts_toward_budget
from effnas.study.attrs import set_user_attrs
from effnas.study.recovery import record_worker
from effnas.train import TrainResult


HOST = socket.gethostname()
TRAIN_SECONDS = 0.0  # how long the fake training of one trial takes


def fake_train(spec, data, cfg, on_epoch=None, **kwargs) -> TrainResult:
    accuracy = 0.5 + (zlib.crc32(spec.to_string().encode()) % 4000) / 10000.0
    time.sleep(TRAIN_SECONDS)
    for epoch in range(1, cfg.epochs + 1):
        if on_epoch is not None:
            on_epoch(epoch, accuracy)
    return TrainResult(accuracy=accuracy, epochs_done=cfg.epochs, train_seconds=TRAIN_SECONDS, images_per_second=0.0)


def tiny_data(*args, **kwargs) -> DataSplits:
    g = torch.Generator().manual_seed(0)

    def split(n: int) -> ImageDataset:
        return ImageDataset(torch.randint(0, 256, (n, 1, 32, 32), dtype=torch.uint8, generator=g),
                            torch.arange(n, dtype=torch.int64) % 10, tuple(str(i) for i in range(10)), "synthetic")

    return DataSplits(split(64), split(32), None, (0.5,), (0.25,), "synthetic")


def patch_training(setattr_=setattr) -> None:
    setattr_(effnas.evaluate, "train_and_evaluate", fake_train)
    setattr_(nas.search, "load_data", tiny_data)


def search_config(results: Path, name: str, n_trials: int) -> dict:
    return {"results_dir": str(results), "search": {"study_name": name, "n_trials": n_trials},
            "proxy": {"train_size": 64, "minival_size": 32, "epochs": 1, "threads": 1, "device": "cpu"}}


def param_names(results: Path, name: str, n_trials: int) -> list[str]:
    cfg = as_config("nas_search", search_config(results, name, n_trials))
    return cfg.space.build(num_classes=10, in_channels=1, resolution=cfg.proxy.resolution).param_names()


def stored_trials(folder: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(folder / "study.journal")))
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def assert_table_is_storage(folder: Path, name: str, names: list[str]) -> pd.DataFrame:
    expected = trials_frame(stored_trials(folder, name), names)
    pd.testing.assert_frame_equal(pd.read_parquet(folder / "trials.parquet"), expected)
    assert (folder / "trials.csv").read_text() == expected.to_csv(index=False)
    return expected


def journal_study(path: Path, name: str = "s") -> optuna.Study:
    return optuna.create_study(study_name=name, storage=make_storage(storage_config(), path), load_if_exists=True,
                               sampler=optuna.samplers.RandomSampler(seed=0))


def quadratic(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -1.0, 1.0)
    return x * x


# ------------------------------------------------------------------------------------------------
# Throttled exports


def test_final_table_of_a_throttled_run_is_the_storage(tmp_path, monkeypatch):
    """With exports throttled to one an hour, a run writes its first trial's table and, at its end,
    the whole study (re-evaluated top 3 included): both are what the storage says."""
    patch_training(monkeypatch.setattr)
    monkeypatch.setattr(effnas.results, "EXPORT_SECONDS", 3600.0)
    exported = []

    def counting_export(*args, **kwargs):
        exported.append(len(args[0].get_trials(deepcopy=False)))
        return export_study(*args, **kwargs)

    monkeypatch.setattr(nas.search, "export_study", counting_export)
    outcome = nas.search.run_search(search_config(tmp_path, "thr", 12))
    folder = tmp_path / "thr"
    table = assert_table_is_storage(folder, "thr", param_names(tmp_path, "thr", 12))
    assert len(exported) == 2 and exported[0] < exported[1] == len(table)  # first trial, then the end
    assert table["state"].isin(["COMPLETE", "PRUNED"]).sum() >= 12
    rerank = as_config("nas_search", search_config(tmp_path, "thr", 12)).rerank
    assert table["rerank_of"].notna().sum() == rerank.k * rerank.seeds  # the re-evaluations, throttled too
    best = json.loads((folder / "best.json").read_text())
    assert best["trial"] == outcome.best["trial"] and best["trial"] in set(table["number"])


def test_exports_come_at_least_every_interval_and_no_more_often(tmp_path):
    """A worker exporting through a :class:`Throttle` of 0.25 s: at every trial's end the table is
    at most 0.25 s old, exports are at least 0.25 s apart, and far fewer than the trials."""
    study = journal_study(tmp_path)
    interval, slack = 0.25, 0.05
    throttle = Throttle(seconds=interval, share=0.0)
    exports: list[float] = []
    ends: list[float] = []

    def export(study: optuna.Study) -> None:
        exports.append(time.monotonic())
        export_study(study, tmp_path, ["x"])

    def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        ends.append(time.monotonic())
        throttle(export, study)

    def objective(trial: optuna.Trial) -> float:
        time.sleep(0.02)
        return quadratic(trial)

    assert run_worker(study, objective, budget=80, on_trial=on_trial) == 80
    assert exports[0] - ends[0] < slack  # the first trial is exported at once
    assert all(b - a >= interval for a, b in zip(exports, exports[1:]))
    for end in ends:  # the last export at or before each trial's end is at most one interval old
        last = max(e for e in exports if e <= end + slack)
        assert end - last <= interval + slack, (end - last, exports, ends)
    assert len(exports) <= (ends[-1] - ends[0]) / interval + 1 < len(ends)
    throttle(export, study, force=True)  # the end of the run (on demand)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "trials.parquet"), trials_frame(study.get_trials(), ["x"]))


def test_workers_exporting_together_never_go_back_in_time(tmp_path):
    """Three workers (threads, each with its own storage) export one study through throttles of
    0.05 s while a reader watches the files: every table read is whole, none has fewer finished
    trials than one read before it (a worker never replaces a newer table with its older snapshot:
    the storage is read under the folder's lock), and the last one is the storage."""
    import threading

    journal_study(tmp_path)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            study = optuna.load_study(study_name="s", storage=make_storage(storage_config(), tmp_path),
                                      sampler=optuna.samplers.RandomSampler(seed=i))
            throttle = Throttle(seconds=0.05, share=0.0)

            def objective(trial: optuna.Trial) -> float:
                time.sleep(0.01)
                return quadratic(trial)

            run_worker(study, objective, budget=60, poll_seconds=0.05,
                       on_trial=lambda s, t: throttle(export_study, s, tmp_path, ["x"]))
            throttle(export_study, study, tmp_path, ["x"], force=True)
        except BaseException as exc:  # noqa: BLE001 -- reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    finished, reads = -1, 0
    while any(t.is_alive() for t in threads):
        path = tmp_path / "trials.parquet"
        if path.exists():
            with open(path, "rb") as handle:  # one open file: the old or the new one, whole
                df = pd.read_parquet(handle)
            assert df["number"].tolist() == list(range(len(df)))
            now = int(df["state"].isin(["COMPLETE", "PRUNED", "FAIL"]).sum())
            assert now >= finished, (now, finished)
            finished, reads = now, reads + 1
        time.sleep(0.01)
    for t in threads:
        t.join()
    assert not errors, errors
    assert reads > 3
    study = journal_study(tmp_path)
    assert sum(t.state == TrialState.COMPLETE for t in study.get_trials()) == 60
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "trials.parquet"), trials_frame(study.get_trials(), ["x"]))
    assert (tmp_path / "trials.csv").read_text() == trials_frame(study.get_trials(), ["x"]).to_csv(index=False)


SIGNAL_RUN = """
import sys
sys.path.insert(0, {tests!r})
import test_exports as t
t.TRAIN_SECONDS = 0.05
t.patch_training()
import effnas.results, nas.search
from effnas.study import exit_code
effnas.results.EXPORT_SECONDS = 3600.0  # only the first trial is exported during the run
outcome = nas.search.run_search(t.search_config({results!r}, "sig", 100000))
sys.exit(exit_code(outcome.interrupted) if outcome.interrupted else 0)
"""


def test_sigterm_leaves_an_up_to_date_table(tmp_path):
    """Exports throttled to one an hour: SIGTERM still ends the run with the whole study exported."""
    folder = tmp_path / "sig"
    script = SIGNAL_RUN.format(tests=str(Path(__file__).parent), results=str(tmp_path))
    with open(tmp_path / "out", "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                finished = [t for t in stored_trials(folder, "sig") if t.state == TrialState.COMPLETE]
            except (KeyError, FileNotFoundError, ValueError):
                finished = []
            if len(finished) >= 8:
                break
            time.sleep(0.1)
        assert proc.poll() is None, (tmp_path / "out").read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143, (tmp_path / "out").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    table = assert_table_is_storage(folder, "sig", param_names(tmp_path, "sig", 100000))
    assert (table["state"] == "COMPLETE").sum() >= 8
    assert not {"RUNNING"} & set(table["state"])  # the interrupted trial, if any, is FAIL and queued again
    assert "Traceback" not in (tmp_path / "out").read_text()


# ------------------------------------------------------------------------------------------------
# Per-trial bookkeeping of the worker loop


def test_budget_counter_and_progress_follow_the_study(tmp_path):
    """The incremental counter agrees with the full scans at every step, whatever the order in
    which trials finish; the progress line's best trial is :func:`best_trial`."""
    study = journal_study(tmp_path)
    counter, progress = BudgetCounter(), ProgressReporter(budget=50)
    rng = random.Random(0)
    open_trials: list[optuna.Trial] = []
    for step in range(120):
        if open_trials and rng.random() < 0.5:
            trial = open_trials.pop(rng.randrange(len(open_trials)))
            kind = rng.choice(["complete", "pruned", "fail", "duplicate"])
            if kind == "duplicate":
                trial.set_user_attr("duplicate_of", 0)
            if kind in ("complete", "duplicate"):
                trial.set_user_attr("reward", rng.random())
                trial.set_user_attr("accuracy", 0.5)
            state = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "fail": TrialState.FAIL,
                     "duplicate": TrialState.COMPLETE}[kind]
            frozen = study.tell(trial, 1.0 if state == TrialState.COMPLETE else None, state=state)
            progress(study, frozen)
            assert getattr(progress.best, "number", None) == getattr(best_trial(study), "number", None)
        elif rng.random() < 0.2:
            study.enqueue_trial({"x": rng.random()})
        else:
            trial = study.ask()
            trial.suggest_float("x", -1, 1)
            open_trials.append(trial)
        assert counter.refresh(study) == budget_used(study), step
        for number in (0, step // 2, len(study.trials)):
            held = sum(1 for t in study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
                       if t.number < number and counts_toward_budget(t))
            assert counter.ahead_of(number) == held


def journal_ops(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_storage_write_of_the_loop_per_trial_and_none_repeated(tmp_path):
    """Per trial the loop writes ``worker`` only (the process start time is in the study, once);
    an attribute the evaluator sets again to the value it holds is not written again."""
    study = journal_study(tmp_path)

    def objective(trial: optuna.Trial) -> float:
        set_user_attrs(trial, {"accuracy": 0.5, "epochs": 1})
        set_user_attrs(trial, {"accuracy": 0.5, "epochs": 1})  # the end-of-training record: same values
        set_user_attrs(trial, {"epochs": 1.0})  # another type: written
        assert trial.user_attrs["epochs"] == 1.0
        return quadratic(trial)

    assert run_worker(study, objective, budget=3) == 3
    ops = journal_ops(tmp_path / "study.journal")
    attrs = [list(op["user_attr"]) for op in ops if op["op_code"] == 8]  # SET_TRIAL_USER_ATTR
    assert attrs == [["worker"], ["accuracy"], ["epochs"], ["epochs"]] * 3
    recorded = [op["system_attr"] for op in ops if op["op_code"] == 3]  # SET_STUDY_SYSTEM_ATTR
    assert recorded == [{f"worker_started:{HOST}:{os.getpid()}": recorded[0][f"worker_started:{HOST}:{os.getpid()}"]}]
    assert run_worker(study, objective, budget=4) == 1  # the same process again: not recorded twice
    assert sum(op["op_code"] == 3 for op in journal_ops(tmp_path / "study.journal")) == 1
    assert all("worker_started" not in t.user_attrs for t in study.get_trials())


def test_a_dead_worker_whose_pid_was_reused_is_recognised_from_the_study_record(tmp_path):
    study = journal_study(tmp_path)
    me = f"{HOST}:{os.getpid()}"
    # a worker with this process's pid, started at another time, died with a trial RUNNING
    study._storage.set_study_system_attr(study._study_id, f"worker_started:{me}", "1")
    dead = study.ask()
    dead.suggest_float("x", -1, 1)
    dead.set_user_attr("worker", me)
    assert recover_dead_local_workers(study, max_retry=2) == [dead.number]
    assert study.trials[dead.number].user_attrs["reason"] == f"worker {me} died (process gone)"

    record_worker(study)  # this process takes over the record: its own trials are alive
    alive = study.ask()
    alive.suggest_float("x", -1, 1)
    alive.set_user_attr("worker", me)
    assert recover_dead_local_workers(study, max_retry=2) == []
    assert study.trials[alive.number].state == TrialState.RUNNING


def test_loop_cost_per_trial_does_not_grow_with_the_study(tmp_path):
    """The loop's own work per trial (recovery, budget, slot check, progress) with a throttled
    export: the last trials cost about what the first ones did (the objective is free)."""
    study, n = journal_study(tmp_path), 200
    progress, throttle = ProgressReporter(budget=n), Throttle()
    marks: list[float] = []

    def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        marks.append(time.process_time())
        throttle(export_study, study, tmp_path, ["x"])
        progress(study, trial)

    run_worker(study, quadratic, budget=n, on_trial=on_trial)
    first = (marks[50] - marks[10]) / 40
    last = (marks[-1] - marks[-41]) / 40
    assert last < 2.5 * first + 0.002, (first, last)
