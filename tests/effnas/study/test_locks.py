"""The journal lock breaks a dead local holder's lock at once and waits for a live one."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

from effnas.study.locks import HolderSymlinkLock

HOLD = ("import sys, time; from effnas.study.locks import HolderSymlinkLock; "
        "lock = HolderSymlinkLock(sys.argv[1]); lock.acquire(); print('held', flush=True); "
        "time.sleep(float(sys.argv[2])); lock.release()")


def _holder(path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_dead_holders_lock_is_broken_at_once(tmp_path, caplog):
    journal = tmp_path / "study.journal"
    proc = _holder(journal, 60)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert os.path.lexists(f"{journal}.lock")  # left behind, as after kill -9 inside a journal write
    lock = HolderSymlinkLock(str(journal), grace_period=30)
    start = time.monotonic()
    with caplog.at_level(logging.INFO, logger="effnas"):
        assert lock.acquire()
    assert time.monotonic() - start < 5  # Optuna alone waits out its 30 s grace period
    assert "is gone" in caplog.text
    lock.release()
    assert not os.path.lexists(f"{journal}.lock") and not os.path.exists(f"{journal}.lock.holder")


def test_a_live_holder_is_waited_for(tmp_path):
    journal = tmp_path / "study.journal"
    proc = _holder(journal, 1.5)
    lock = HolderSymlinkLock(str(journal), grace_period=30)
    start = time.monotonic()
    assert lock.acquire()
    waited = time.monotonic() - start
    lock.release()
    proc.wait(timeout=30)
    assert proc.returncode == 0 and waited >= 0.5  # not broken: the holder released it itself


def test_held_path_and_touch(tmp_path):
    lock = HolderSymlinkLock(str(tmp_path / "train"), grace_period=30)
    assert lock.path == f"{tmp_path / 'train'}.lock" and not lock.held()
    lock.touch()  # no lock yet: nothing to refresh, no error
    assert lock.acquire() and lock.held()
    os.utime(lock.path, (1, 1), follow_symlinks=False)  # as if the holder went quiet long ago
    lock.touch()
    assert time.time() - os.lstat(lock.path).st_mtime < 60
    lock.release()
    assert not lock.held()


def test_holder_id_is_made_once_per_process_and_anew_after_fork():
    from effnas.study.locks import _me

    me = _me()
    assert me == _me() and me.split(":")[1] == str(os.getpid())
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own pid, not the parent's cached id
        os.write(write, _me().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 200).decode()
    os.waitpid(pid, 0)
    assert child.split(":")[1] == str(pid) and child != me
