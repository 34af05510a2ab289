"""Scale-out and fault tolerance with real processes: several ``nas-search`` workers sharing one
study on a real PostgreSQL server or the journal file, SIGKILLed workers, Hydra multirun with
separate processes, SIGTERM / SIGINT.

Every worker here is a separate ``python -m nas.cli`` process; the tests watch the shared storage
from outside (as optuna-dashboard would) to pick the moment to kill one.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Callable

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from effnas.study import make_storage, storage_config

HOST = socket.gethostname()
TINY = ["rerank=none", "proxy.train_size=256", "proxy.minival_size=200", "proxy.epochs=1", "proxy.threads=1",
        "proxy.bn_recalibrate_batches=2"]
# long enough (several seconds on 2 shared cores) to catch a trial in the middle of its training
SLOW = ["proxy.train_size=1024"]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class Workers:
    """``nas-search`` processes of one test, their output in files, all killed at teardown."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.results = root / "results"
        self.procs: list[subprocess.Popen] = []
        self.logs: dict[int, tuple[Path, Path]] = {}

    def start(self, *args: str, env: dict | None = None) -> subprocess.Popen:
        n = len(self.procs)
        out, err = self.root / f"worker{n}.out", self.root / f"worker{n}.err"
        with open(out, "w") as o, open(err, "w") as e:
            flags = [a for a in args if a.startswith("-")]  # Hydra's -m before the overrides
            overrides = [a for a in args if not a.startswith("-")]
            proc = subprocess.Popen([sys.executable, "-m", "nas.cli", *flags, f"results_dir={self.results}",
                                     *overrides],
                                    cwd=self.root, stdout=o, stderr=e, env={**os.environ, **(env or {})})
        self.procs.append(proc)
        self.logs[proc.pid] = (out, err)
        return proc

    def output(self, proc: subprocess.Popen) -> tuple[str, str]:
        out, err = self.logs[proc.pid]
        return out.read_text(), err.read_text()

    def describe(self) -> str:
        parts = []
        for p in self.procs:
            out, err = self.output(p)
            parts.append(f"--- pid {p.pid} rc {p.poll()}\n{out[-1500:]}\n{err[-2500:]}")
        return "\n".join(parts)

    def wait(self, procs: list[subprocess.Popen], timeout: float = 240) -> list[int]:
        deadline = time.monotonic() + timeout
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"worker {p.pid} still running after {timeout}s\n{self.describe()}")
        return [p.returncode for p in procs]

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)


@pytest.fixture
def workers(tmp_path: Path):
    w = Workers(tmp_path)
    yield w
    w.close()


def storage_of(url: str | None, journal: Path | None) -> optuna.storages.BaseStorage:
    if url:  # as the workers open it (SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3)
        return make_storage(storage_config("postgres", url=url), Path("."))
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))


def wait_for(check: Callable[[], object], what: str, workers: Workers, timeout: float = 180,
             alive: list[subprocess.Popen] | None = None) -> object:
    """Poll ``check`` until it returns something truthy; fail early if a worker died meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except KeyError:  # the study does not exist yet
            found = None
        if found:
            return found
        for p in alive or []:
            if p.poll() is not None:
                pytest.fail(f"worker {p.pid} exited ({p.returncode}) while waiting for {what}\n{workers.describe()}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}\n{workers.describe()}")


def trials_of(storage: optuna.storages.BaseStorage, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def running_trial_of(storage, name: str, proc: subprocess.Popen):
    """The trial ``proc`` is training right now (RUNNING, its network chosen and priced -- the last
    attribute written before training -- and no epoch finished yet), or None."""
    def check():
        for t in trials_of(storage, name):
            if t.state == TrialState.RUNNING and t.user_attrs.get("worker") == f"{HOST}:{proc.pid}" \
                    and "resolution" in t.user_attrs and "epochs" not in t.user_attrs:
                time.sleep(0.3)  # past its last storage write: a kill now does not hold the journal lock
                return t
        return None
    return check


def retried(t: optuna.trial.FrozenTrial) -> int | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t)


def check_accounted(trials: list[optuna.trial.FrozenTrial], budget: int) -> None:
    """The budget exactly, nothing left running or queued, every failure explained, and no
    finished trial evaluated a second time."""
    states = [t.state for t in trials]
    summary = [(t.number, t.state.name, t.user_attrs.get("reason"), retried(t)) for t in trials]
    assert sum(s in FINISHED for s in states) == budget, summary
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states, summary
    for t in trials:
        if t.state == TrialState.FAIL:
            assert t.user_attrs.get("reason"), f"trial {t.number} failed without a reason: {summary}"
    finished = [t for t in trials if t.state in FINISHED]
    points = [json.dumps(t.params, sort_keys=True) for t in finished]
    assert len(set(points)) == len(points), f"a point was evaluated twice: {summary}"
    for t in finished:  # a finished trial is never the origin of a retry
        assert not [r.number for r in trials if retried(r) == t.number], (t.number, summary)


def csv_of(results: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(results / name / "trials.csv")


# ------------------------------------------------------------------------------------------------
# PostgreSQL


def test_three_postgres_workers_share_the_budget_and_never_show_the_password(workers, postgres_db,
                                                                              postgres_server):
    name, budget = "pg3", 6
    args = ["storage=postgres", f"storage.url={postgres_db}", f"search.study_name={name}",
            f"search.n_trials={budget}", *TINY, "proxy.train_size=512"]
    procs = [workers.start(*args, f"worker={i}") for i in range(3)]
    assert workers.wait(procs) == [0, 0, 0], workers.describe()

    trials = trials_of(storage_of(postgres_db, None), name)
    check_accounted(trials, budget)
    ran_by = {t.user_attrs["worker"] for t in trials if t.state in FINISHED}
    assert len(ran_by) >= 2 and ran_by <= {f"{HOST}:{p.pid}" for p in procs}, ran_by

    table = csv_of(workers.results, name)
    assert set(table["state"]) <= {"COMPLETE", "PRUNED", "FAIL"}
    assert table["state"].isin(["COMPLETE", "PRUNED"]).sum() == budget
    assert {t.number for t in trials if t.state in FINISHED} <= set(table["number"])

    secret = postgres_server.password.encode()
    for p in procs:
        out, err = workers.output(p)
        assert postgres_server.password not in out + err
        assert "Traceback" not in out + err
    files = [f for f in workers.results.rglob("*") if f.is_file()]
    assert any(f.name == "config.yaml" for f in files) and any(f.parent.name == "configs" for f in files)
    leaks = [str(f) for f in files if secret in f.read_bytes()]
    assert not leaks, f"password written to {leaks}"
    saved = (workers.results / name / "config.yaml").read_text()
    assert "effnas:***@127.0.0.1" in saved  # the URL is kept, its password is not


def test_postgres_worker_killed_mid_trial_is_failed_after_grace_and_retried(workers, postgres_db):
    name, budget, grace = "pgkill", 5, 4
    storage = storage_of(postgres_db, None)
    args = ["storage=postgres", f"storage.url={postgres_db}", "storage.heartbeat_interval=1",
            f"storage.grace_period={grace}", f"search.study_name={name}", f"search.n_trials={budget}", *TINY]
    # trials long enough that worker 0 is caught in the middle of one (one protocol for all workers)
    procs = [workers.start(*args, f"worker={i}", *SLOW) for i in (0, 1, 2)]
    victim, survivors = procs[0], procs[1:]
    doomed = wait_for(running_trial_of(storage, name, victim), "a trial of worker 0 in training", workers,
                      alive=procs)
    victim.kill()
    killed_at = datetime.now()
    victim.wait(timeout=30)
    assert workers.wait(survivors) == [0, 0], workers.describe()

    trials = trials_of(storage, name)
    by_number = {t.number: t for t in trials}
    dead = by_number[doomed.number]
    assert dead.state == TrialState.FAIL, (dead.state, dead.user_attrs)
    assert dead.user_attrs["reason"] == f"no heartbeat from worker {HOST}:{victim.pid} for over {grace}s " \
                                       "(worker died?)", dead.user_attrs
    # failed by the heartbeat's grace period, not earlier (the last beat was at most 1 s before the kill)
    assert (dead.datetime_complete - killed_at).total_seconds() >= grace - 1.5, (dead.datetime_complete, killed_at)
    retries = [t for t in trials if retried(t) == dead.number]
    assert len(retries) == 1, [(t.number, t.state.name, retried(t)) for t in trials]
    retry = retries[0]
    assert retry.state in FINISHED and retry.params == dead.params
    assert retry.user_attrs["worker"] in {f"{HOST}:{p.pid}" for p in survivors}
    check_accounted(trials, budget)


# ------------------------------------------------------------------------------------------------
# Journal file (the default)


def test_journal_worker_killed_mid_trial_is_recovered_by_restarted_workers(workers):
    name, budget = "jkill", 4
    journal = workers.results / name / "study.journal"
    args = [f"search.study_name={name}", f"search.n_trials={budget}", *TINY]
    first = workers.start(*args, *SLOW)
    storage = wait_for(lambda: journal.exists() and storage_of(None, journal), "the journal", workers,
                       alive=[first])
    doomed = wait_for(running_trial_of(storage, name, first), "a trial in training", workers, alive=[first])
    first.kill()
    first.wait(timeout=30)
    left = {t.number: t for t in trials_of(storage, name)}[doomed.number]
    assert left.state == TrialState.RUNNING  # nobody else knows it died yet

    restarted = [workers.start(*args, f"worker={i}", *SLOW) for i in (1, 2)]  # the study's protocol
    assert workers.wait(restarted) == [0, 0], workers.describe()

    trials = trials_of(storage, name)
    dead = {t.number: t for t in trials}[doomed.number]
    assert dead.state == TrialState.FAIL
    assert dead.user_attrs["reason"] == f"worker {HOST}:{first.pid} died (process gone)"
    retries = [t for t in trials if retried(t) == dead.number]
    assert len(retries) == 1 and retries[0].state in FINISHED and retries[0].params == dead.params
    check_accounted(trials, budget)
    table = csv_of(workers.results, name)
    row = table.set_index("number").loc[retries[0].number]
    assert row["retry_of"] == dead.number
    logs = "".join("".join(workers.output(p)) for p in restarted)
    assert f"trial {dead.number}: worker {HOST}:{first.pid} died (process gone): failed and re-enqueued" in logs


# ------------------------------------------------------------------------------------------------
# Hydra multirun: separate processes, one study


@pytest.mark.parametrize("launcher, storage", [("submitit_local", "journal"), ("joblib", "postgres")])
def test_multirun_launcher_starts_separate_processes_on_one_study(workers, request, launcher, storage):
    name, budget = f"multi-{launcher}", 4
    extra, url, password = [], None, None
    if storage == "postgres":  # the URL with its password on the command line: Hydra prints and saves it
        server = request.getfixturevalue("postgres_server")
        url, password = request.getfixturevalue("postgres_db"), server.password
        extra = ["storage=postgres", f"storage.url={url}"]
    parent = workers.start("-m", "worker=range(2)", f"hydra/launcher={launcher}", f"search.study_name={name}",
                           f"search.n_trials={budget}", *TINY, "proxy.train_size=768", *extra)
    assert workers.wait([parent]) == [0], workers.describe()
    store = storage_of(url, workers.results / name / "study.journal")
    assert [s.study_name for s in optuna.get_all_study_summaries(store)] == [name]
    trials = trials_of(store, name)
    check_accounted(trials, budget)
    pids = {t.user_attrs["worker"] for t in trials if t.state in FINISHED}
    assert len(pids) == 2, pids  # both jobs ran trials of the one study...
    assert f"{HOST}:{parent.pid}" not in pids  # ...in processes of their own
    configs = list((workers.results / name / "configs").glob("*.yaml"))
    assert len(configs) == 2
    if password:
        out, err = workers.output(parent)
        assert password not in out + err and "#0 : " in out + err  # Hydra's job list, redacted
        leaks = [str(f) for f in workers.results.rglob("*") if f.is_file() and password.encode() in f.read_bytes()]
        assert not leaks, f"password written to {leaks}"
        assert list(workers.results.rglob("multirun.yaml"))


def test_sqlite_shared_by_a_parallel_multirun_warns(workers):
    parent = workers.start("-m", "worker=range(2)", "hydra/launcher=joblib", "storage=sqlite",
                           "search.study_name=lite", "search.n_trials=2", "search.warm_start=[]", *TINY)
    assert workers.wait([parent]) == [0], workers.describe()
    out, err = workers.output(parent)
    assert (out + err).count("storage=sqlite is for one process only") == 2, out + err
    assert "JoblibLauncher" in out + err


# ------------------------------------------------------------------------------------------------
# Signals


@pytest.mark.parametrize("signame, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_signal_fails_the_running_trial_writes_results_and_exits(workers, signame, code):
    name = f"sig-{signame.lower()}"
    journal = workers.results / name / "study.journal"
    proc = workers.start(f"search.study_name={name}", "search.n_trials=3", *TINY, *SLOW)
    storage = wait_for(lambda: journal.exists() and storage_of(None, journal), "the journal", workers,
                       alive=[proc])
    doomed = wait_for(running_trial_of(storage, name, proc), "a trial in training", workers, alive=[proc])
    proc.send_signal(getattr(signal, signame))
    assert workers.wait([proc], timeout=60) == [code], workers.describe()

    out, err = workers.output(proc)
    assert "Traceback" not in out + err
    message = [line for line in err.splitlines() if line.startswith("nas-search interrupted")]
    assert len(message) == 1 and f"interrupted by {signame}" in message[0], err
    assert str(workers.results / name) in message[0]
    table = csv_of(workers.results, name).set_index("number")
    assert table.loc[doomed.number, "state"] == "FAIL"
    assert table.loc[doomed.number, "reason"] == f"interrupted by {signame}"
    again = table[table["retry_of"] == doomed.number]  # queued for the next worker
    assert list(again["state"]) == ["WAITING"]
    assert (workers.results / name / "trials.parquet").exists()


def test_an_interrupted_multi_epoch_trial_resumes_in_its_retry_with_the_attempts_seed(workers):
    """A 3-epoch proxy stopped by SIGTERM after an epoch: the retry (next run) trains with the
    attempt's seed, resumes after the attempt's last saved epoch, and reaches the accuracy of an
    uninterrupted training of that network and seed; no checkpoint is left behind."""
    from effnas.task import load_data
    from effnas.train import ProxyConfig, train_and_evaluate
    from search_space import ArchSpec

    name = "resume"
    args = [f"search.study_name={name}", "search.n_trials=2", "rerank=none", "proxy.train_size=1024",
            "proxy.minival_size=200", "proxy.epochs=3", "proxy.threads=1", "proxy.bn_recalibrate_batches=2"]
    ckpts = workers.results / name / "checkpoints"
    proc = workers.start(*args)
    wait_for(lambda: list(ckpts.glob("trial-*.pt")), "a trial's first epoch saved", workers, alive=[proc])
    proc.send_signal(signal.SIGTERM)
    assert workers.wait([proc], timeout=60) == [143], workers.describe()
    table = csv_of(workers.results, name).set_index("number")
    (doomed,) = table.index[table["state"] == "FAIL"]
    assert list(ckpts.glob("trial-*.pt"))  # kept for the retry

    again = workers.start(*args)
    assert workers.wait([again]) == [0], workers.describe()
    table = csv_of(workers.results, name).set_index("number")
    (retry,) = table.index[table["retry_of"] == doomed]
    row = table.loc[retry]
    assert row["state"] == "COMPLETE" and row["seed"] == table.loc[doomed, "seed"]
    out, err = workers.output(again)
    assert f"trial {retry} resuming after epoch " in out + err, out + err
    assert not list(ckpts.glob("*.pt"))
    proxy = ProxyConfig(train_size=1024, minival_size=200, epochs=3, threads=1, bn_recalibrate_batches=2)
    data = load_data({"name": "fashion_mnist", "root": None}, proxy, 0)
    whole = train_and_evaluate(ArchSpec.from_string(row["arch"]), data, proxy.train_config(int(row["seed"])))
    assert row["accuracy"] == pytest.approx(whole.accuracy, abs=1e-12)
