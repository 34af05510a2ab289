"""The README's cluster recipe on a real SLURM: Debian's slurm-wlm 22.05, one node (2 CPUs, 8000 MB)
on loopback, started by ``../shared/slurm/bringup.sh`` and stopped by ``stop.sh`` -- without
accounting (no slurmdbd: ``sacct`` fails), the way small clusters often run.

* The README's ``nas-search -m hydra/launcher=slurm ...`` command, read from the README itself and
  shrunk only by what the tiny node and the test budget need, runs two SLURM array jobs (two
  workers) on one study: on the journal file in the results folder (shared local disk), and on
  PostgreSQL (``storage=postgres`` with ``EFFNAS_STORAGE_URL``). The budget is exact, both workers
  trained trials, and no architecture was trained twice.
* ``scancel`` of one worker's job in the middle of a trial: the trial ends FAIL and is run again by
  the other worker (PostgreSQL heartbeats), the budget is still exact, and the submitting
  ``nas-search`` ends within a bound with one clear line (exit 1: a worker job ended early).

The SLURM binaries come from the ``slurm-wlm`` and ``munge`` Debian packages (``.ci/run`` installs
them); without them the tests fail, they do not skip. bringup.sh writes ``/etc/slurm/slurm.conf``
and runs the daemons as root on fixed ports: one cluster per machine at a time.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from effnas.allocator import find_tcmalloc
from effnas.study import make_storage, storage_config

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SLURM_DIR = Path(os.environ.get("EFFNAS_SLURM_DIR", REPO.parent / "shared" / "slurm"))
HOST = socket.gethostname()
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
CLIENTS = ("sbatch", "squeue", "scancel", "sinfo", "scontrol")
DAEMONS = ("munged", "slurmctld", "slurmd")

# What the one-node test cluster and a CI budget need, applied to the README's command: two
# one-CPU workers that fit the node (2 CPUs, 8000 MB), a short time limit, 4 trials.
TINY_NODE = {"worker": "range(2)", "proxy.threads": "1", "hydra.launcher.cpus_per_task": "1",
             "hydra.launcher.mem_gb": "2", "hydra.launcher.timeout_min": "10", "search.n_trials": "4"}
TINY_PROXY = ["proxy.train_size=256", "proxy.minival_size=200", "proxy.epochs=1",
              "proxy.bn_recalibrate_batches=2", "search.warm_start=[]", "rerank=none"]
BUDGET = 4
SUBMITTER_BOUND = 120  # seconds from scancel to the submitter's exit (measured: 25 s)


# ------------------------------------------------------------------------------------------------
# The cluster


@dataclass
class Cluster:
    state_dir: Path
    partition: str          # SLURM's default partition (the launcher config leaves it unset)
    accounting: bool        # does sacct work? (bringup.sh without ACCT=1: no)


def _run(args: list[str], timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PATH": SBIN_PATH})
    if check and done.returncode:
        pytest.fail(f"{' '.join(args)} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-2000:]}",
                    pytrace=False)
    return done


def _running_daemon(name: str) -> int | None:
    """The pid of a live ``name`` process recorded in its pid file, or None."""
    pidfile = Path(f"/run/slurm/{name}.pid")
    try:
        pid = int(pidfile.read_text().split()[0])
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError, IndexError):
        return None
    return pid if comm == name else None


def _jobs() -> list[str]:
    """Ids (``%A``) of the jobs the controller lists as not yet ended."""
    out = _run(["squeue", "-h", "-t", "PD,R,CG,S,CF,RQ,RH,SO,ST", "-o", "%A"], check=False).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def _cancel_all(timeout: float = 90) -> None:
    """scancel every job and wait until none is left: SLURM sends SIGTERM, then SIGKILL after
    KillWait (30 s); stopping slurmd before that would leave the job's processes behind."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = _jobs()
        if not jobs:
            return
        _run(["scancel", *jobs], check=False)
        time.sleep(1)


def _processes() -> dict[int, tuple[str, int]]:
    """{pid: (command name, parent pid)} of every process."""
    table = {}
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit():
                stat = (proc / "stat").read_text()
                name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
                table[int(proc.name)] = (name, int(rest[1]))
        except (OSError, ValueError, IndexError):
            continue
    return table


def _slurmstepds() -> set[int]:
    return {pid for pid, (name, _) in _processes().items() if name == "slurmstepd"}


def _kill_tree(root: int) -> None:
    """SIGKILL ``root`` and every process below it, by pid."""
    table = _processes()
    tree, grew = {root}, True
    while grew:
        below = {pid for pid, (_, parent) in table.items() if parent in tree} - tree
        tree |= below
        grew = bool(below)
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def slurm(tmp_path_factory) -> Cluster:
    missing = [b for b in (*CLIENTS, *DAEMONS) if shutil.which(b, path=SBIN_PATH) is None]
    if missing:
        pytest.fail(f"SLURM binaries not found: {', '.join(missing)}. Install them with `apt-get install "
                    f"slurm-wlm munge` (what .ci/run does); the cluster recipe is only claimed where it "
                    f"was checked on a real SLURM.", pytrace=False)
    for script in ("bringup.sh", "stop.sh"):
        if not (SLURM_DIR / script).is_file():
            pytest.fail(f"{SLURM_DIR / script} not found (set EFFNAS_SLURM_DIR to the folder of "
                        f"bringup.sh and stop.sh)", pytrace=False)
    if os.geteuid() != 0:
        pytest.fail("bringup.sh writes /etc/slurm/slurm.conf and runs slurmctld/slurmd as root: run the "
                    "SLURM tests as root (CI does)", pytrace=False)
    for daemon in ("slurmctld", "slurmd"):
        pid = _running_daemon(daemon)
        if pid is not None:
            pytest.fail(f"a {daemon} is already running (pid {pid}): another SLURM on this machine? stop it "
                        f"(../shared/slurm/stop.sh STATE_DIR) before running these tests", pytrace=False)
    state = tmp_path_factory.mktemp("slurm-state")
    before = _slurmstepds()
    up = subprocess.run(["bash", str(SLURM_DIR / "bringup.sh"), str(state)], capture_output=True, text=True,
                        timeout=180, env={**os.environ, "PATH": SBIN_PATH})
    try:
        if up.returncode:
            pytest.fail(f"bringup.sh failed ({up.returncode}): {(up.stdout + up.stderr)[-3000:]}", pytrace=False)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            nodes = _run(["sinfo", "-h", "-N", "-o", "%t"], check=False).stdout.split()
            if nodes and all(s.rstrip("*~#") in ("idle", "mix", "alloc") for s in nodes):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the SLURM node did not become idle: {_run(['sinfo'], check=False).stdout}", pytrace=False)
        _cancel_all()  # jobs left in slurmctld's saved state by an earlier run
        partitions = _run(["sinfo", "-h", "-o", "%P"]).stdout.split()
        default = next((p.rstrip("*") for p in partitions if p.endswith("*")), partitions[0])
        accounting = _run(["sacct", "-n", "-X"], check=False).returncode == 0
        yield Cluster(state_dir=state, partition=default, accounting=accounting)
    finally:
        _cancel_all()
        down = subprocess.run(["bash", str(SLURM_DIR / "stop.sh"), str(state)], capture_output=True, text=True,
                              timeout=120)
        for pid in _slurmstepds() - before:  # job processes of this cluster that outlived it
            _kill_tree(pid)
        assert "STILL RUNNING" not in down.stdout, down.stdout


# ------------------------------------------------------------------------------------------------
# The README's command


def readme_cluster_command() -> str:
    """The ``nas-search -m hydra/launcher=slurm ...`` command of the README's cluster recipe, as
    written (continuation lines joined)."""
    text = README.read_text()
    start = text.index("## Many workers, one study (the cluster recipe)")
    section = text[start:text.index("\n## ", start + 1)]
    lines = section.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("nas-search -m hydra/launcher=slurm"))
    command = [lines[first]]
    while command[-1].rstrip().endswith("\\"):
        command.append(lines[first + len(command)])
    return "\n".join(command)


def shell_words(command: str) -> list[str]:
    """The words bash makes of ``command`` (a backslash-newline continues the line)."""
    return shlex.split(command.replace("\\\n", " "))


def adapted(command: str, changes: dict[str, str], extra: list[str]) -> list[str]:
    """``command``'s words with the values of ``changes`` replaced (a key the command lacks is
    added) and ``extra`` appended."""
    words = shell_words(command)
    left = dict(changes)
    out = []
    for word in words:
        key = word.split("=", 1)[0]
        if "=" in word and key in left:
            word = f"{key}={left.pop(key)}"
        out.append(word)
    return out + [f"{k}={v}" for k, v in left.items()] + extra


def test_readme_cluster_command_is_valid_shell():
    command = readme_cluster_command()
    words = shell_words(command)
    assert words[:3] == ["nas-search", "-m", "hydra/launcher=slurm"], words
    assert "storage=postgres" in words and any(w.startswith("worker=range(") for w in words), words
    # what a user pastes goes through bash first: e.g. an unquoted worker=range(8) is a syntax error
    syntax = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    for key in TINY_NODE:  # every setting the test changes is one the README shows
        assert any(w.startswith(f"{key}=") for w in words), (key, words)


def nas_search_program() -> list[str]:
    script = Path(sys.executable).with_name("nas-search")
    return [str(script)] if script.exists() else [sys.executable, "-m", "nas.cli"]


@dataclass
class Submission:
    """One run of the README's command: the submitting ``nas-search`` and its SLURM jobs."""

    root: Path
    storage: str                    # journal | postgres
    url: str | None = None
    extra: list[str] = field(default_factory=list)
    study: str = "slurm"
    proc: subprocess.Popen | None = None

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def sweep(self) -> Path:
        return self.root / "sweep"

    def command(self) -> list[str]:
        words = adapted(readme_cluster_command(), {**TINY_NODE, "storage": self.storage},
                        [*TINY_PROXY, f"search.study_name={self.study}", f"results_dir={self.results}",
                         f"hydra.sweep.dir={self.sweep}", *self.extra])
        return nas_search_program() + words[1:]

    def start(self) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if k != "EFFNAS_STORAGE_URL"}
        if self.url:
            env["EFFNAS_STORAGE_URL"] = self.url  # as the README says: not on the command line
        with open(self.root / "submit.out", "w") as out, open(self.root / "submit.err", "w") as err:
            self.proc = subprocess.Popen(self.command(), cwd=self.root, stdout=out, stderr=err, env=env,
                                         start_new_session=True)
        return self.proc

    def output(self) -> tuple[str, str]:
        return (self.root / "submit.out").read_text(), (self.root / "submit.err").read_text()

    def describe(self) -> str:
        out, err = self.output()
        parts = [f"--- submitter rc {self.proc.poll() if self.proc else None}\n{out[-1500:]}\n{err[-2500:]}",
                 f"--- squeue\n{_run(['squeue'], check=False).stdout}"]
        for log in sorted(self.sweep.glob(".submitit/*/*_log.*")):
            parts.append(f"--- {log.relative_to(self.sweep)}\n{log.read_text(errors='replace')[-2000:]}")
        return "\n".join(parts)

    def wait(self, timeout: float) -> int | None:
        """The submitter's exit code, or None if it is still running after ``timeout`` seconds."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def storage_object(self) -> optuna.storages.BaseStorage:
        if self.storage == "postgres":  # as the workers open it (the driver named for SQLAlchemy 2.1)
            return make_storage(storage_config("postgres", url=self.url), Path("."))
        journal = self.results / self.study / "study.journal"
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))

    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return optuna.load_study(study_name=self.study, storage=self.storage_object()).get_trials(deepcopy=False)


@pytest.fixture
def submission(tmp_path):
    made: list[Submission] = []

    def make(storage: str, url: str | None = None, extra: list[str] | None = None) -> Submission:
        made.append(Submission(tmp_path, storage, url, list(extra or [])))
        return made[-1]

    yield make
    for s in made:
        s.stop()
    _cancel_all()  # nothing of this test runs on into the next one


def retried(t: optuna.trial.FrozenTrial) -> int | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t)


def trained(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """COMPLETE and PRUNED trials that used the budget: not a repeat of an architecture that was not
    trained again (``duplicate_of``), not a re-evaluation of a finished one (``rerank_of``)."""
    return [t for t in trials if t.state in FINISHED and t.user_attrs.get("duplicate_of") is None
            and t.user_attrs.get("rerank_of") is None]


def check_study(trials: list[optuna.trial.FrozenTrial], budget: int) -> None:
    """The exact budget, nothing left running or queued, every failure explained, no architecture
    trained twice."""
    summary = [(t.number, t.state.name, t.user_attrs.get("worker"), t.user_attrs.get("reason"), retried(t))
               for t in trials]
    done = trained(trials)
    assert len(done) == budget, summary
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)], summary
    for t in trials:
        if t.state == TrialState.FAIL:
            assert t.user_attrs.get("reason"), f"trial {t.number} failed without a reason: {summary}"
    archs = [t.user_attrs.get("arch") for t in done]
    assert None not in archs, summary
    assert len(set(archs)) == len(archs), f"an architecture was trained twice: {summary}"
    points = [json.dumps(t.params, sort_keys=True) for t in done]
    assert len(set(points)) == len(points), f"a point was evaluated twice: {summary}"


def worker_pid(t: optuna.trial.FrozenTrial) -> int:
    host, _, pid = t.user_attrs["worker"].rpartition(":")
    assert host == HOST, t.user_attrs["worker"]
    return int(pid)


# ------------------------------------------------------------------------------------------------
# Two workers, one study


@pytest.mark.parametrize("storage", ["journal", "postgres"])
def test_readme_cluster_command_runs_two_slurm_workers_on_one_study(slurm, submission, request, storage):
    url = request.getfixturevalue("postgres_db") if storage == "postgres" else None
    run = submission(storage, url)
    started = time.monotonic()
    run.start()
    code = run.wait(timeout=150)
    if code is None:
        pytest.fail(f"nas-search still running after 150 s\n{run.describe()}")
    assert code == 0, run.describe()
    seconds = time.monotonic() - started

    trials = run.trials()
    check_study(trials, BUDGET)
    workers = {t.user_attrs["worker"] for t in trained(trials)}
    assert len(workers) == 2, (workers, run.describe())  # both array jobs trained trials...
    assert run.proc.pid not in {worker_pid(t) for t in trained(trials)}  # ...in processes of their own
    # ...as SLURM jobs: one submitit folder and result per array task, run on the default partition
    results = sorted(run.sweep.glob(".submitit/*_*/*_result.pkl"))
    assert len(results) == 2, run.describe()
    script = next(run.sweep.glob(".submitit/*/*_submission.sh")).read_text()
    assert "#SBATCH --array=0-1" in script and "--partition" not in script, script
    assert "#SBATCH --mem=2GB" in script and "#SBATCH --cpus-per-task=1" in script, script
    if find_tcmalloc():  # the submitter restarted with tcmalloc: not exported as it is (a node without it
        # would print an ld.so error per process); the job script preloads it where the node has it
        assert "ldconfig -p" in script and f"export LD_PRELOAD={find_tcmalloc()}" in script, script
        logs = "".join(f.read_text(errors="replace") for f in run.sweep.glob(".submitit/*_*/*_log.*"))
        assert logs.count("memory allocator tcmalloc") == 2, run.describe()  # both workers trained with it
    out, err = run.output()
    assert "Traceback" not in out + err, run.describe()
    if url:
        password = url.split(":")[2].split("@")[0]
        leaks = [str(f) for f in run.root.rglob("*") if f.is_file() and password.encode() in f.read_bytes()]
        assert not leaks, f"password written to {leaks}"
    print(f"{storage}: {len(trials)} trials by {sorted(workers)} in {seconds:.0f} s")


# ------------------------------------------------------------------------------------------------
# scancel in the middle of a trial


def job_of(pid: int) -> str:
    """The SLURM job (``%i``, e.g. ``12_0``) that runs process ``pid``: the running jobs from
    squeue, matched by the processes SLURM tracks for each (``scontrol listpids``)."""
    listed = _run(["squeue", "-h", "-t", "R", "-o", "%A %i"]).stdout.split("\n")
    for line in filter(None, (ln.strip() for ln in listed)):
        raw, shown = line.split()
        pids = _run(["scontrol", "listpids", raw], check=False).stdout.split("\n")[1:]
        if any(ln.split() and ln.split()[0] == str(pid) for ln in pids):
            return shown
    pytest.fail(f"no running SLURM job has process {pid}: squeue says {listed}")


def test_scancel_mid_trial_fails_and_retries_the_trial_and_the_submitter_ends(slurm, submission, postgres_db):
    run = submission("postgres", postgres_db,
                     ["storage.heartbeat_interval=1", "storage.grace_period=3",
                      "proxy.train_size=1024"])  # trials of several seconds: one is caught in training
    run.start()
    deadline = time.monotonic() + 120
    doomed = None
    while doomed is None and time.monotonic() < deadline:
        if run.proc.poll() is not None:
            pytest.fail(f"nas-search ended before a trial ran\n{run.describe()}")
        try:
            trials = run.trials()
        except (KeyError, ValueError):  # the study (or its tables) does not exist yet
            trials = []
        doomed = next((t for t in trials if t.state == TrialState.RUNNING and "resolution" in t.user_attrs
                       and "epochs" not in t.user_attrs), None)
        time.sleep(0.2)
    if doomed is None:
        pytest.fail(f"no trial in training after 120 s\n{run.describe()}")
    job = job_of(worker_pid(doomed))
    _run(["scancel", job])
    cancelled_at = time.monotonic()

    # The submitter waits on its jobs. submitit alone asks sacct, which without accounting never
    # says that the cancelled job ended (it wrote no result file): the launcher must end anyway,
    # once the other worker has finished, with one line naming the job.
    code = run.wait(timeout=SUBMITTER_BOUND)
    waited = time.monotonic() - cancelled_at
    if code is None:
        pytest.fail(f"the submitting nas-search was still waiting {waited:.0f} s after `scancel {job}` "
                    f"(accounting: {slurm.accounting})\n{run.describe()}")
    out, err = run.output()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 1, run.describe()
    assert lines and lines[-1].startswith("error: ") and job in lines[-1], run.describe()
    assert "Traceback" not in out + err, run.describe()

    trials = run.trials()
    by_number = {t.number: t for t in trials}
    dead = by_number[doomed.number]
    assert dead.state == TrialState.FAIL, (dead.state, dead.user_attrs)
    assert dead.user_attrs.get("reason"), dead.user_attrs
    retries = [t for t in trials if retried(t) == dead.number]
    assert len(retries) == 1, [(t.number, t.state.name, retried(t)) for t in trials]
    retry = retries[0]
    assert retry.params == dead.params and retry.state in FINISHED, (retry.state, retry.user_attrs)
    assert retry.user_attrs["worker"] != dead.user_attrs["worker"], retry.user_attrs
    check_study(trials, BUDGET)
    print(f"scancel {job}: trial {dead.number} FAIL ({dead.user_attrs['reason']}), retried as trial "
          f"{retry.number}; submitter ended {waited:.0f} s later with {code}: {lines[-1]}")
