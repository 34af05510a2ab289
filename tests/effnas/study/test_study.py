"""effnas.study in one process: storages built from the config (heartbeats, retries, drivers,
secrets), the worker loop's budget, duplicates and heartbeats, dead-worker recovery, signal
handling, atomic result files under concurrent writers, the launcher configs."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from effnas.results import trials_frame
from effnas.secrets import RedactSecrets, redact_secrets
from effnas.study import (ORPHAN_SECONDS, Interrupted, RetryStaleTrial, enqueue_once, exit_code, handle_signals, interruptible,
                          make_storage, recover_dead_local_workers, run_worker, storage_config)

import nas.config  # noqa: E402,F401 -- registers the nas_search root schema for the compose below

HOST = socket.gethostname()
PG_URL = "postgresql://u:secret@h/db"


def journal_study(path: Path, name: str = "s") -> optuna.Study:
    storage = make_storage(storage_config(), path)
    return optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                               sampler=optuna.samplers.RandomSampler(seed=0))


def quadratic(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -1.0, 1.0)
    return x * x


def retried(t: optuna.trial.FrozenTrial) -> int | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------------------------------------
# Storages from the config


def test_postgres_storage_gets_heartbeats_and_retries_from_the_config(postgres_db, postgres_server, tmp_path):
    cfg = storage_config("postgres", url=postgres_db, heartbeat_interval=3, grace_period=7, max_retry=4)
    storage = make_storage(cfg, tmp_path)
    rdb = getattr(storage, "_backend", storage)
    assert isinstance(rdb, optuna.storages.RDBStorage)
    assert (rdb.heartbeat_interval, rdb.grace_period) == (3, 7)
    callback = rdb.get_heartbeat_stale_trial_callback()
    assert isinstance(callback, optuna.storages.RetryHeartbeatStaleTrialCallback) and callback._max_retry == 4
    assert rdb.engine.url.drivername == "postgresql+psycopg2"  # installed driver, not SQLAlchemy's default
    assert postgres_server.password not in cfg.describe(tmp_path)
    assert storage_config("postgres", url=postgres_db).grace_seconds == 30  # the one default (was 20 in Python, 30 in YAML)
    assert storage_config("postgres", url=postgres_db, grace_period=None).grace_seconds == 20  # null: 2 x interval


def test_unreachable_or_refused_postgres_is_one_line_without_the_password(postgres_server, tmp_path):
    wrong = postgres_server.url.replace(postgres_server.password, "not-the-password-42")
    with pytest.raises(ValueError) as info:
        make_storage(storage_config("postgres", url=wrong), tmp_path)
    message = str(info.value)
    assert "password authentication failed" in message and "\n" not in message
    assert "not-the-password-42" not in message and ":***@" in message


def test_workers_starting_together_on_an_empty_database(postgres_db):
    """All create optuna's tables at once: PostgreSQL's catalog lets one win ("duplicate key value
    violates unique constraint pg_type_typname_nsp_index" for the others), and they retry."""
    code = ("import sys; from pathlib import Path; import optuna; from effnas.study import storage_config, make_storage; "
            "s = make_storage(storage_config('postgres', url=sys.argv[1]), Path('.')); "
            "optuna.create_study(study_name='x', storage=s, load_if_exists=True)")
    procs = [subprocess.Popen([sys.executable, "-c", code, postgres_db], stderr=subprocess.PIPE, text=True)
             for _ in range(5)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 5, errors


@pytest.mark.parametrize("bad, message", [
    (dict(kind="postgres", url=None), "EFFNAS_STORAGE_URL"),
    (dict(kind="postgres", url="mysql://u:secret@h/db"), "postgresql://"),
    (dict(kind="postgres", url=PG_URL, heartbeat_interval=0), "heartbeat_interval"),
    (dict(kind="postgres", url=PG_URL, heartbeat_interval=10, grace_period=10), "grace_period"),
    (dict(max_retry=-1), "max_retry"),
    (dict(kind="postgres", url=PG_URL, heartbeat_interval=1.5), "integer"),
])
def test_storage_config_is_checked(bad, message):
    with pytest.raises(ValueError, match=message) as info:
        storage_config(**bad)
    assert "secret" not in str(info.value)


@pytest.mark.parametrize("env, warns", [("postgresql://u:secret@h/db", True), ("", False), (None, False)])
def test_the_journal_says_when_effnas_storage_url_is_set_but_unused(tmp_path, caplog, monkeypatch, env, warns):
    """A cluster user who set EFFNAS_STORAGE_URL and forgot storage=postgres hears of it, without the URL."""
    if env is None:
        monkeypatch.delenv("EFFNAS_STORAGE_URL", raising=False)
    else:
        monkeypatch.setenv("EFFNAS_STORAGE_URL", env)
    with caplog.at_level(logging.WARNING, logger="effnas"):
        make_storage(storage_config("journal"), tmp_path)
    warned = [r.getMessage() for r in caplog.records if "EFFNAS_STORAGE_URL is set" in r.getMessage()]
    assert warned == ([f"EFFNAS_STORAGE_URL is set, but storage=journal: the study is in the journal file "
                       f"{tmp_path / 'study.journal'} (add storage=postgres to use the database)"] if warns else [])


def _hydra_job(tmp_path: Path, *overrides: str, multirun: bool):
    """Pretend to be inside a Hydra job composed from our configs (as the launcher makes it)."""
    from hydra import compose, initialize_config_module
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    with initialize_config_module(config_module="effnas_conf", version_base="1.3"):
        cfg = compose("nas_search", overrides=[f"results_dir={tmp_path}", *overrides], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN if multirun else RunMode.RUN
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture
def no_hydra():
    from hydra.core.hydra_config import HydraConfig

    yield
    HydraConfig.instance().cfg = None


@pytest.mark.parametrize("launcher, multirun, workers, warns", [
    ("joblib", True, 1, True),            # jobs side by side: several writers
    ("submitit_local", True, 1, True),
    ("basic", True, 1, False),            # jobs one after the other: one writer at a time
    (None, False, 1, False),              # one plain run
    (None, False, 3, True),               # workers=3 plain invocations
])
def test_sqlite_warns_when_workers_share_it(tmp_path, caplog, no_hydra, launcher, multirun, workers, warns):
    if launcher is not None:
        _hydra_job(tmp_path, f"hydra/launcher={launcher}", multirun=multirun)
    with caplog.at_level(logging.WARNING, logger="effnas"):
        make_storage(storage_config("sqlite"), tmp_path, workers=workers)
    warned = [r.getMessage() for r in caplog.records if "storage=sqlite is for one process only" in r.getMessage()]
    assert bool(warned) == warns, caplog.text


def test_launcher_configs_compose(tmp_path, no_hydra):
    slurm = _hydra_job(tmp_path, "hydra/launcher=slurm", multirun=True).hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher")
    assert slurm.partition is None and slurm.timeout_min > 0 and slurm.cpus_per_task >= 1 and slurm.array_parallelism >= 1
    assert slurm.signal_delay_s > 0
    local = _hydra_job(tmp_path, "hydra/launcher=local", multirun=True).hydra.launcher
    assert local._target_.endswith("submitit_launcher.LocalLauncher") and local.timeout_min >= 24 * 60
    pg = _hydra_job(tmp_path, "storage=postgres", "storage.url=postgresql://u:pw@h/db", multirun=False)
    assert pg.hydra.callbacks.redact_secrets._target_ == "effnas.secrets.RedactSecrets"
    assert pg.storage.kind == "postgres" and pg.storage.heartbeat_interval == 10


def test_secrets_are_scrubbed_from_text_and_hydra_files(tmp_path):
    text = "storage.url=postgresql://effnas:Pw%40x-1@db:5432/s other=http://host:8080/x mail=a@b.c"
    assert redact_secrets(text) == "storage.url=postgresql://effnas:***@db:5432/s other=http://host:8080/x mail=a@b.c"
    hydra_escaped = r"#0 : storage.url=postgresql\://effnas\:Pw-1@127.0.0.1\:5432/db worker=0"
    assert redact_secrets(hydra_escaped) == r"#0 : storage.url=postgresql\://effnas\:***@127.0.0.1\:5432/db worker=0"
    raw_at = r"url=postgresql\://effnas\:p@ss/w:rd@h\:5432/db and postgresql://u:x@y@h/db 'quoted'"
    assert redact_secrets(raw_at) == r"url=postgresql\://effnas\:***@h\:5432/db and postgresql://u:***@h/db 'quoted'"
    sweep = tmp_path / "sweep"
    (sweep / "0" / ".hydra").mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("task:\n- storage.url=postgresql://u:hunter2@h/db\n")
    (sweep / "0" / ".hydra" / "overrides.yaml").write_text("- storage.url=postgresql://u:hunter2@h/db\n")
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}, "output_subdir": ".hydra",
                                      "runtime": {"output_dir": str(sweep / "0")}}})
    RedactSecrets()._scrub(cfg, multirun=True)
    for f in (sweep / "multirun.yaml", sweep / "0" / ".hydra" / "overrides.yaml"):
        assert "hunter2" not in f.read_text() and "u:***@h" in f.read_text()


# ------------------------------------------------------------------------------------------------
# Retries and dead workers


def test_retry_copies_the_point_not_the_dead_attempt_and_stops_at_max_retry(tmp_path):
    study = journal_study(tmp_path)
    trial = study.ask()
    trial.suggest_float("x", -1, 1)
    for key, value in {"worker": "h:1", "worker_started": "5", "reason": "died", "kind": "grid"}.items():
        trial.set_user_attr(key, value)
    study.tell(trial, state=TrialState.FAIL)
    numbers = [trial.number]
    for _ in range(3):  # fail each retry again
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = RetryStaleTrial(2)
        assert retry(study, study.trials[-1]) is (len(numbers) <= 2)
        if len(numbers) > 2:
            break
        waiting = study.trials[-1]
        assert waiting.state == TrialState.WAITING and waiting.params == study.trials[0].params
        assert waiting.user_attrs == {"kind": "grid"}  # enqueue-time attributes only
        numbers.append(waiting.number)
        study._storage.set_trial_state_values(waiting._trial_id, TrialState.RUNNING)
        study._storage.set_trial_state_values(waiting._trial_id, TrialState.FAIL)
    trials = study.get_trials()
    assert [retried(t) for t in trials] == [None, 0, 0]
    assert trials_frame(trials, ["x"])["retry_of"].tolist() == [pd.NA, 0, 0]
    assert len(trials) == 3  # max_retry=2: the original and two retries


def test_trials_of_dead_local_workers_are_failed_and_re_enqueued_once(tmp_path):
    study = journal_study(tmp_path)
    me = f"{HOST}:{os.getpid()}"
    cases = {"dead": f"{HOST}:{dead_pid()}", "alive": me, "other-host": "elsewhere:1",
             "reused-pid": me}  # the pid lives, but it is another process than the one recorded
    numbers = {}
    for case, who in cases.items():
        trial = study.ask()
        trial.suggest_float("x", -1, 1)
        trial.set_user_attr("worker", who)
        if case == "reused-pid":
            trial.set_user_attr("worker_started", "1")
        numbers[case] = trial.number
    assert recover_dead_local_workers(study, max_retry=2) == [numbers["dead"], numbers["reused-pid"]]
    assert recover_dead_local_workers(study, max_retry=2) == []  # a second pass changes nothing
    trials = study.get_trials()
    states = {case: trials[n].state for case, n in numbers.items()}
    assert states == {"dead": TrialState.FAIL, "alive": TrialState.RUNNING, "other-host": TrialState.RUNNING,
                      "reused-pid": TrialState.FAIL}
    assert trials[numbers["dead"]].user_attrs["reason"] == f"worker {cases['dead']} died (process gone)"
    assert sorted(retried(t) for t in trials if t.state == TrialState.WAITING) == [numbers["dead"],
                                                                                  numbers["reused-pid"]]


def test_orphan_without_worker_is_failed_only_after_a_long_wait(tmp_path, monkeypatch):
    study = journal_study(tmp_path)
    study.ask()  # a process that died between optuna's ask and the objective's first line
    assert recover_dead_local_workers(study, 2) == []
    monkeypatch.setattr("effnas.study.recovery.ORPHAN_SECONDS", -1.0)
    assert recover_dead_local_workers(study, 2) == [0]
    assert "orphaned" in study.get_trials()[0].user_attrs["reason"]
    assert ORPHAN_SECONDS >= 60


def test_run_worker_keeps_heartbeats_alive_and_retries_a_silent_trial(postgres_db, tmp_path):
    """Each trial outlives the grace period: only its heartbeat thread (started by optuna per
    ``optimize(n_trials=1)`` call) keeps a watcher from failing it. The trial whose heartbeat
    stopped (a dead worker) is failed after the grace period and retried."""
    cfg = storage_config("postgres", url=postgres_db, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name="hb", storage=make_storage(cfg, tmp_path),
                                sampler=optuna.samplers.RandomSampler(seed=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "heartbeat ... used with Study.optimize": on purpose
        silent = study.ask()
    silent.suggest_float("x", -1, 1)
    silent.set_user_attr("worker", "elsewhere:1")
    study._storage.record_heartbeat(silent._trial_id)  # beat once, then never again

    watcher_study = optuna.load_study(study_name="hb", storage=make_storage(cfg, tmp_path))
    stop = threading.Event()

    def watch() -> None:  # another worker, checking for stale trials all the time
        from effnas.study import fail_stale_trials
        while not stop.is_set():
            fail_stale_trials(watcher_study)
            time.sleep(0.2)

    rdb = study._storage._backend
    ages: list[float] = []

    def heartbeat_age(trial_id: int) -> float:
        import sqlalchemy

        with rdb.engine.connect() as db:
            return db.execute(sqlalchemy.text("SELECT EXTRACT(EPOCH FROM now() - heartbeat) FROM "
                                              "trial_heartbeats WHERE trial_id = :t"), {"t": trial_id}).scalar()

    def slow(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -1, 1)
        time.sleep(3.2)  # > grace period
        ages.append(heartbeat_age(trial._trial_id))  # beating all along, not once at the start
        return x

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        assert run_worker(study, slow, budget=2, poll_seconds=0.2) == 2
    finally:
        stop.set()
        watcher.join()
    assert len(ages) == 2 and all(age is not None and age < 1.5 for age in ages), ages
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL and "no heartbeat" in trials[0].user_attrs["reason"]
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == 2 and len(trials) == 3
    assert sum(retried(t) == 0 for t in done) == 1  # the silent trial's point was run again


# ------------------------------------------------------------------------------------------------
# Budget and duplicates


def test_budget_is_global_across_concurrent_workers(tmp_path):
    """Four workers (threads here, each with its own storage connection) race for a budget of 3."""
    journal_study(tmp_path)
    barrier = threading.Barrier(4)

    def worker(i: int) -> None:
        study = optuna.load_study(study_name="s", storage=make_storage(storage_config(), tmp_path),
                                  sampler=optuna.samplers.RandomSampler(seed=i))

        def objective(trial: optuna.Trial) -> float:
            value = quadratic(trial)
            time.sleep(0.3)
            return value
        barrier.wait()
        run_worker(study, objective, budget=3, poll_seconds=0.1)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    trials = journal_study(tmp_path).get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
    assert all(t.state in (TrialState.COMPLETE, TrialState.FAIL) for t in trials)
    assert all(t.user_attrs["reason"].startswith("surplus") for t in trials if t.state == TrialState.FAIL)


def test_a_point_enqueued_twice_runs_once(tmp_path):
    study = journal_study(tmp_path)
    study.enqueue_trial({"x": 0.5})
    study.enqueue_trial({"x": 0.5})  # what two workers starting together did before enqueue_once
    assert enqueue_once(study, [{"x": 0.5}, {"x": -0.25}], tmp_path) == 1
    assert run_worker(study, quadratic, budget=3) == 3
    trials = study.get_trials()
    runs = [t.params["x"] for t in trials if t.state == TrialState.COMPLETE]
    assert runs.count(0.5) == 1 and -0.25 in runs and len(runs) == 3
    assert trials[1].state == TrialState.FAIL and trials[1].user_attrs["reason"] == "duplicate of trial 0 (enqueued twice)"


def test_only_enqueued_runs_exactly_the_queue(tmp_path):
    study = journal_study(tmp_path)
    for x in (0.1, 0.2, 0.3):
        study.enqueue_trial({"x": x})
    assert run_worker(study, quadratic, budget=None, only_enqueued=True) == 3
    assert sorted(t.params["x"] for t in study.get_trials()) == [0.1, 0.2, 0.3]


# ------------------------------------------------------------------------------------------------
# Signals


def test_signal_is_held_until_a_storage_call_is_over():
    with pytest.raises(Interrupted) as info, handle_signals():
        with interruptible(False):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # delivered now, but held
            held = True
        pytest.fail("not reached: leaving the block raises")  # pragma: no cover
    assert held and info.value.signame == "SIGTERM" and exit_code(info.value.signame) == 143

    # inside an interruptible block, but in the middle of a storage module's code
    storage_code = {"__name__": "optuna.storages.fake", "os": os, "signal": signal, "time": time}
    exec(textwrap.dedent("""
        def write():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.3)
            return "written"
    """), storage_code)
    with pytest.raises(Interrupted) as info, handle_signals():
        assert storage_code["write"]() == "written"  # not cut in half...
        time.sleep(1)  # ...and raised right after
        pytest.fail("the held signal was lost")  # pragma: no cover
    assert info.value.signame == "SIGINT"


def test_one_interruption_per_run_and_handlers_restored():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted), handle_signals():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        except Interrupted:
            os.kill(os.getpid(), signal.SIGINT)  # a second signal while cleaning up: ignored
            time.sleep(0.1)
            raise
    assert signal.getsignal(signal.SIGTERM) is before


# ------------------------------------------------------------------------------------------------
# Result files under concurrent writers

WRITER = textwrap.dedent("""
    import sys, time
    import pandas as pd
    from effnas.io import write_table
    folder, writer, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    end, version = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        n = 3000 + (writer * 997 + version * 131) % 4000
        write_table(pd.DataFrame({"writer": writer, "version": version, "row": range(n),
                                  "text": "x" * 40}), folder, "trials")
        version += 1
    print(version)
""")


def expected_rows(writer: int, version: int) -> int:
    return 3000 + (writer * 997 + version * 131) % 4000


def test_concurrent_writers_never_leave_a_torn_file(tmp_path):
    """Readers see the old or the new file, never a mix -- provided they open it once.
    (``pd.read_parquet(path)`` opens the path twice, for the footer and then for the data, and can
    mix two versions while writers replace it.)"""
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(i), "3"], stdout=subprocess.PIPE,
                                text=True) for i in range(3)]
    reads = {"parquet": 0, "csv": 0}
    while any(w.poll() is None for w in writers):
        for kind in reads:
            path = tmp_path / f"trials.{kind}"
            if not path.exists():
                continue
            with open(path, "rb") as handle:  # one open file: the old or the new one, whole
                df = pd.read_parquet(handle) if kind == "parquet" else pd.read_csv(handle)
            writer, version = int(df["writer"].iloc[0]), int(df["version"].iloc[0])
            assert (df["writer"] == writer).all() and (df["version"] == version).all()
            assert len(df) == expected_rows(writer, version) and df["row"].tolist() == list(range(len(df)))
            reads[kind] += 1
    written = [int(w.communicate()[0]) for w in writers]
    assert all(w.returncode == 0 for w in writers)
    assert min(written) > 5 and min(reads.values()) > 5, (written, reads)
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no leftovers


def test_study_trials_follows_the_storage_as_get_trials_does(tmp_path):
    """The incremental listing (journal: only unfinished and new trials read again) equals
    ``get_trials`` after trials are added, finish, and are enqueued -- also from another process's
    storage object, and when unfinished trials are most of the study (it lists the study whole)."""
    from effnas.study.enqueue import live_trials, study_trials

    def journal() -> optuna.storages.JournalStorage:
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "j")))

    study = optuna.create_study(storage=journal(), study_name="s")
    other = optuna.load_study(storage=journal(), study_name="s")  # a second worker's view of the file

    def same() -> None:
        for view in (study, other):
            want = view.get_trials(deepcopy=False)
            got = study_trials(view)
            assert [(t.number, t.state, t.user_attrs) for t in got] == \
                   [(t.number, t.state, t.user_attrs) for t in want]
            assert [t.number for t in live_trials(view)] == [t.number for t in want if not t.state.is_finished()]

    same()
    running = []
    for i in range(80):  # two left running: few enough that only they and new trials are read again
        t = study.ask()
        t.suggest_int("a", 0, 9)
        if i in (3, 33):
            running.append(t)
        else:
            study.tell(t, float(i))
        same()
    other.enqueue_trial({"a": 1})
    same()
    running[0].set_user_attr("seen", True)
    study.tell(running[0], state=TrialState.PRUNED)
    other.tell(running[1].number, 1.0)
    same()
    for _ in range(80):  # unfinished trials outnumber the finished share: listed whole
        other.enqueue_trial({"a": 2})
    same()


def test_a_signal_inside_the_import_machinery_is_held_not_raised():
    """An exception raised in importlib's module-lock callbacks is swallowed by the interpreter, so a
    signal landing there waits (and is delivered again) like one inside a storage call."""
    from types import SimpleNamespace

    from effnas.study.signals import _in_unsafe_call

    def frame(name, back=None):
        return SimpleNamespace(f_globals={"__name__": name}, f_back=back)

    assert _in_unsafe_call(frame("importlib._bootstrap", frame("torch.nn")))
    assert _in_unsafe_call(frame("effnas.train", frame("optuna.storages.journal._storage")))
    assert not _in_unsafe_call(frame("effnas.train", frame("torch.nn")))
