"""Shared by the benches: Kendall's tau, a resumable record of finished runs, how busy the CPUs are,
and the plumbing of benches that measure in child processes (each prints one ``RESULT {json}`` line)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = "RESULT "


def kendall_tau(x: list[float], y: list[float]) -> float:
    """Kendall's tau-b (ties handled); nan when either side is constant."""
    conc = disc = tx = ty = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tx += 1
            elif dy == 0:
                ty += 1
            elif dx * dy > 0:
                conc += 1
            else:
                disc += 1
    denom = ((conc + disc + tx) * (conc + disc + ty)) ** 0.5
    return (conc - disc) / denom if denom else float("nan")


def partial_tau(x: list[float], y: list[float], z: list[float]) -> float:
    """Kendall's partial tau of ``x`` and ``y`` given ``z`` (Kendall 1942): how much ``x`` ranks
    ``y`` beyond what both owe to ``z``; nan where ``z`` orders either completely or a side is constant."""
    txy, txz, tyz = kendall_tau(x, y), kendall_tau(x, z), kendall_tau(y, z)
    denom = ((1 - txz ** 2) * (1 - tyz ** 2)) ** 0.5
    return (txy - txz * tyz) / denom if denom > 0 else float("nan")


class Runs:
    """Every measured run, saved (atomically) after each one: an interrupted bench resumes.

    Several processes may share one file (an ablation beside a running bench): each save re-reads
    the file under an exclusive lock (``<file>.lock``) and adds its row to what the others saved."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = self._read()

    def _read(self) -> dict:
        return json.loads(self.path.read_text()) if self.path.exists() else {"runs": {}}

    def get(self, key: str):
        return self.data["runs"].get(key)

    def put(self, key: str, value) -> None:
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            self.data = self._read()
            self.data["runs"][key] = value
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(self.data, indent=1))
            tmp.replace(self.path)


def checkpoint_path(folder: str | os.PathLike, key: str) -> Path:
    """Where the training recorded under ``key`` (a :class:`Runs` row) saves itself after every
    epoch, so that a killed bench resumes it after its last saved epoch; removed once the row is in."""
    return Path(folder) / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"


def cpu_busy(seconds: float = 1.0) -> float | None:
    """Fraction of all CPUs busy over ``seconds`` (Linux /proc/stat), None elsewhere."""
    def sample() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait
    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def child_env(drop: tuple[str, ...] = (), **extra: str) -> dict[str, str]:
    """This process's environment less ``drop``, plus ``extra`` and the repository on PYTHONPATH:
    what a bench's child process runs in."""
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def print_result(values: dict) -> None:
    """A child's measurement, as the one line :func:`parse_result` reads."""
    print(RESULT + json.dumps(values), flush=True)


def parse_result(returncode: int, stdout: str, stderr: str, what: str) -> dict:
    """The ``RESULT`` line of a finished child; exits naming ``what`` with its output's tail when
    the child failed or printed none."""
    line = next((ln for ln in stdout.splitlines() if ln.startswith(RESULT)), None)
    if returncode or line is None:
        raise SystemExit(f"{what} failed with {returncode}:\n{(stdout + stderr)[-3000:]}")
    return json.loads(line[len(RESULT):])
