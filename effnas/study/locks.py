"""The journal file's lock, with its holder recorded: a lock left by a dead process on this host is
broken at once instead of after Optuna's 30-second grace period (and its warnings).

Optuna's :class:`~optuna.storages.journal.JournalFileSymlinkLock` is a symlink created atomically
that points at the journal; it does not say who holds it. This lock's symlink points instead at a
file of the holder's own, ``<lock>.d/<host>:<pid>:<start-time>`` (made once per process, empty,
relative to the lock's folder), so taking the lock is still one ``symlink`` call and the holder is
read with one ``readlink`` -- atomically with the lock itself. (An earlier version wrote the holder
to a side file after every acquire and removed it before every release: five more file operations
on each journal append, 48 us of the 79 us an append's lock took.) The target exists, so plain
Optuna processes sharing the journal still ``stat`` the lock as they expect.

A process that finds the lock taken reads its target: a holder on this host whose process is gone
(or whose pid now belongs to another process) is dead, and the lock is broken -- under a small
``flock`` so that two waiters cannot break a lock the other has just taken. Holders on other hosts,
and a lock whose target names no holder (plain Optuna's), get Optuna's rule: forcibly released
after ``grace_period`` seconds without change.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import logging
import os
import socket
import time

from optuna.storages.journal import JournalFileSymlinkLock

__all__ = ["HolderSymlinkLock"]

log = logging.getLogger("effnas")


_ME: tuple[int, str] | None = None


def _me() -> str:
    """``host:pid:start-time`` of this process (made once per process: every journal append takes
    the lock, and reading ``/proc`` each time was measurable per trial; a forked child makes its own)."""
    global _ME
    pid = os.getpid()
    if _ME is None or _ME[0] != pid:
        from .recovery import process_started

        _ME = (pid, f"{socket.gethostname()}:{pid}:{process_started(pid) or ''}")
    return _ME[1]


def _parse(holder: str) -> tuple[str, int, str | None] | None:
    """``(host, pid, start-time)`` of a holder id, or None when it is not one (a plain Optuna lock
    points at the journal file)."""
    host, _, rest = holder.partition(":")
    pid, _, started = rest.partition(":")
    if not host or not pid.isdigit():
        return None
    return host, int(pid), started or None


def _dead(holder: str) -> bool:
    from .recovery import _pid_alive

    parsed = _parse(holder)
    if parsed is None or parsed[0] != socket.gethostname():
        return False
    return not _pid_alive(parsed[1], parsed[2])


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


_MINE: dict[int, set[str]] = {}  # pid -> the holder files it made, removed at its exit


def _own(path: str) -> None:
    pid = os.getpid()
    if pid not in _MINE:
        _MINE[pid] = set()
        atexit.register(_remove_mine, pid)
    _MINE[pid].add(path)


def _remove_mine(pid: int) -> None:
    if os.getpid() == pid:  # a forked child that exits normally runs its parent's handler too
        for path in _MINE.get(pid, ()):
            _remove(path)


class HolderSymlinkLock(JournalFileSymlinkLock):
    def __init__(self, filepath: str, grace_period: int | None = 30) -> None:
        super().__init__(filepath, grace_period)
        self._holders = self._lock_file + ".d"  # one file per process that took this lock
        self._break_file = self._lock_file + ".break"
        self._target: tuple[int, str] | None = None  # (pid, the symlink's target) made by this process

    @property
    def path(self) -> str:
        """The lock's symlink (present while some process holds the lock)."""
        return self._lock_file

    def held(self) -> bool:
        """Whether some process holds the lock now (this one or another)."""
        return os.path.lexists(self._lock_file)

    def touch(self) -> None:
        """Refresh the lock's mtime: a holder doing long work calls it so that waiters with a
        ``grace_period`` do not take the lock as stale (no-op when the lock is gone). Both the
        link (effnas's waiters ``lstat`` it) and its target (plain Optuna's ``stat`` it)."""
        for follow in (False, True):
            try:
                os.utime(self._lock_file, follow_symlinks=follow)
            except OSError:
                pass

    def holder(self) -> str | None:
        """``host:pid:start-time`` of the process holding the lock, or None (not held, or held by
        a process that does not record itself: plain Optuna)."""
        try:
            target = os.readlink(self._lock_file)
        except OSError:
            return None
        name = os.path.basename(target)
        return name if _parse(name) is not None and os.path.dirname(target) == os.path.basename(self._holders) \
            else None

    def _my_target(self) -> str:
        """The symlink's target for this process: ``<lock>.d/<host:pid:start>``, relative to the
        lock's folder (it resolves on every host that mounts the folder), made on first use."""
        pid = os.getpid()
        if self._target is None or self._target[0] != pid:
            me = _me()
            os.makedirs(self._holders, exist_ok=True)
            self._sweep()
            mine = os.path.join(self._holders, me)
            with open(mine, "a"):
                pass
            _own(mine)
            self._target = (pid, os.path.join(os.path.basename(self._holders), me))
        return self._target[1]

    def _sweep(self) -> None:
        """Remove the holder files of dead processes on this host (a killed process leaves its
        own); the lock itself, if one of them holds it, is broken by the next waiter."""
        try:
            names = os.listdir(self._holders)
        except OSError:
            return
        for name in names:
            if _dead(name):
                _remove(os.path.join(self._holders, name))

    def _break_if_dead(self) -> bool:
        holder = self.holder()
        if holder is None or not _dead(holder):
            return False
        with open(self._break_file, "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            try:
                if self.holder() != holder:  # someone broke it (and maybe took it) meanwhile
                    return False
                _remove(self._lock_file)
                _remove(os.path.join(self._holders, holder))
            finally:
                fcntl.flock(guard, fcntl.LOCK_UN)
        log.info("journal lock %s was held by %s, which is gone: lock released", self._lock_file, holder)
        return True

    def acquire(self) -> bool:
        target = self._my_target()
        sleep = 0.001
        mtime, changed = None, time.monotonic()
        while True:
            try:
                os.symlink(target, self._lock_file)
                return True
            except OSError as err:
                if err.errno != errno.EEXIST:
                    raise
            if self._break_if_dead():
                continue
            if self.grace_period is not None:
                try:
                    now = os.lstat(self._lock_file).st_mtime
                except OSError:
                    continue
                if now != mtime:
                    mtime, changed = now, time.monotonic()
                elif time.monotonic() - changed > self.grace_period:
                    log.warning("journal lock %s unchanged for %ss (holder %s): forcibly released",
                                self._lock_file, self.grace_period, self.holder() or "unknown")
                    try:
                        self.release()
                    except RuntimeError:  # released by its holder or another waiter meanwhile
                        pass
                    continue
            time.sleep(sleep)
            sleep = min(sleep * 2, 0.05)
