"""Atomic writers: files get the permissions the umask gives (a team can share results/), and
temporary files of killed writers are cleaned up."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys

import pandas as pd
import pytest

from effnas.io import Busy, locked, remove_stale_temp, write_json, write_table, write_text


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        paths = [*write_table(pd.DataFrame({"a": [1]}), tmp_path, "trials"), write_json({"a": 1}, tmp_path / "best.json"),
                 write_text("x", tmp_path / "config.yaml")]
    finally:
        os.umask(old)
    for p in paths:
        assert stat.S_IMODE(p.stat().st_mode) == mode, p


def test_temporary_files_of_dead_writers_are_removed(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    host = socket.gethostname()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    files = {
        "dead": tmp_path / f".trials.parquet.{host}-{dead_pid}.abc123.tmp",
        "alive": tmp_path / f".trials.parquet.{host}-{proc.pid}.abc123.tmp",
        "other_host": tmp_path / f".trials.parquet.elsewhere-{dead_pid}.abc123.tmp",
        "not_ours": tmp_path / ".notes.tmp",
    }
    for f in files.values():
        f.write_bytes(b"")
    try:
        assert remove_stale_temp(tmp_path) == [files["dead"]]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert [k for k, f in files.items() if f.exists()] == ["alive", "other_host", "not_ours"]


def _hold(path, seconds: float = 60) -> subprocess.Popen:
    """Another process holding ``locked(path, wait=False, owned=True)`` until killed; returns once it holds it."""
    code = ("import sys, time\nfrom effnas.io import locked\n"
            f"with locked({str(path)!r}, wait=False, owned=True):\n    print('held', flush=True)\n    time.sleep({seconds})")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_locked_refuses_at_once_naming_the_holder_and_is_free_once_the_holder_dies(tmp_path):
    path = tmp_path / "job.lock"
    holder = _hold(path)
    try:
        with pytest.raises(Busy, match=f"^{path} is held by {socket.gethostname()}:{holder.pid}$"):
            with locked(path, wait=False):
                pass
    finally:
        holder.kill()  # SIGKILL: no clean-up runs, the kernel drops the lock
        holder.wait()
    with locked(path, wait=False, owned=True):
        assert path.exists()
    assert not path.exists()  # owned: removed by its last holder


def test_a_waiter_on_a_removed_lock_file_takes_the_new_one(tmp_path):
    """The owner removes the file as it ends; one who was already waiting on the old file must not
    count as holding the lock next to a third process that made the new file."""
    path = tmp_path / "job.lock"
    holder = _hold(path, seconds=2)
    with locked(path):  # waits on the old file, which is removed under it; ends holding a new one
        assert path.exists()
        third = subprocess.run([sys.executable, "-c", f"from effnas.io import locked\n"
                                f"with locked({str(path)!r}, wait=False): pass"], capture_output=True, text=True)
        assert third.returncode != 0 and "Busy" in third.stderr, third.stderr
    holder.wait()
