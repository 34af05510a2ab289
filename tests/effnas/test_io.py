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

from effnas.io import remove_stale_temp, write_json, write_table, write_text


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
