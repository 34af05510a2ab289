"""The journal lock breaks a dead local holder's lock at once and waits for a live one."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

from optuna.storages.journal import JournalFileSymlinkLock

from effnas.study.locks import HolderSymlinkLock, _dead, _me

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
    assert not os.path.lexists(f"{journal}.lock")
    assert os.listdir(f"{journal}.lock.d") == [_me()]  # the dead one's file went with it


def test_the_holder_is_the_links_target_and_plain_optuna_can_stat_it(tmp_path):
    journal = tmp_path / "study.journal"
    journal.write_text("")
    lock = HolderSymlinkLock(str(journal))
    assert lock.holder() is None
    lock.acquire()
    assert lock.holder() == _me()
    os.stat(lock.path)  # resolves: Optuna's own waiters stat the lock (a dangling link would spin them)
    lock.release()
    assert lock.holder() is None
    plain = JournalFileSymlinkLock(str(journal))  # plain Optuna points the link at the journal
    plain.acquire()
    assert lock.holder() is None and not _dead(os.readlink(lock.path))  # grace rule, never broken as dead
    plain.release()


def test_holder_files_of_dead_processes_are_swept_and_a_forked_childs_exit_keeps_the_parents(tmp_path):
    journal = tmp_path / "study.journal"
    proc = _holder(journal, 0)  # takes, releases and exits normally: removes its own file
    proc.wait(timeout=30)
    assert os.listdir(f"{journal}.lock.d") == []
    proc = _holder(journal, 60)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    os.unlink(f"{journal}.lock")  # as if someone released it: only the dead one's file is left
    assert len(os.listdir(f"{journal}.lock.d")) == 1
    lock = HolderSymlinkLock(str(journal))
    lock.acquire()
    lock.release()
    assert os.listdir(f"{journal}.lock.d") == [_me()]
    pid = os.fork()
    if pid == 0:
        import atexit

        atexit._run_exitfuncs()  # what a normal interpreter exit of a forked child runs
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.listdir(f"{journal}.lock.d") == [_me()]


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
