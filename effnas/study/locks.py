"""The journal file's lock, with its holder recorded: a lock left by a dead process on this host is
broken at once instead of after Optuna's 30-second grace period (and its warnings).

Optuna's :class:`~optuna.storages.journal.JournalFileSymlinkLock` is a symlink created atomically;
it does not say who holds it. This lock writes ``host:pid:start-time`` to a side file right after
taking the symlink and removes it before releasing. A process that finds the lock taken reads the
side file: a holder on this host whose process is gone (or whose pid now belongs to another
process) is dead, and the lock is broken -- under a small ``flock`` so that two waiters cannot
break a lock the other has just taken. Holders on other hosts, and a lock without a side file,
get Optuna's rule: forcibly released after ``grace_period`` seconds without change.
"""

from __future__ import annotations

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


def _dead(holder: str) -> bool:
    from .recovery import _pid_alive

    host, _, rest = holder.partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    return not _pid_alive(int(pid), started or None)


class HolderSymlinkLock(JournalFileSymlinkLock):
    def __init__(self, filepath: str, grace_period: int | None = 30) -> None:
        super().__init__(filepath, grace_period)
        self._holder_file = self._lock_file + ".holder"
        self._break_file = self._lock_file + ".break"

    @property
    def path(self) -> str:
        """The lock's symlink (present while some process holds the lock)."""
        return self._lock_file

    def held(self) -> bool:
        """Whether some process holds the lock now (this one or another)."""
        return os.path.lexists(self._lock_file)

    def touch(self) -> None:
        """Refresh the lock's mtime: a holder doing long work calls it so that waiters with a
        ``grace_period`` do not take the lock as stale (no-op when the lock is gone)."""
        try:
            os.utime(self._lock_file, follow_symlinks=False)
        except OSError:
            pass

    def _read_holder(self) -> str | None:
        try:
            with open(self._holder_file) as handle:
                return handle.read().strip() or None
        except OSError:
            return None

    def _break_if_dead(self) -> bool:
        holder = self._read_holder()
        if holder is None or not _dead(holder):
            return False
        with open(self._break_file, "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            try:
                if self._read_holder() != holder:  # someone broke it (and maybe took it) meanwhile
                    return False
                for path in (self._holder_file, self._lock_file):
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        pass
            finally:
                fcntl.flock(guard, fcntl.LOCK_UN)
        log.info("journal lock %s was held by %s, which is gone: lock released", self._lock_file, holder)
        return True

    def acquire(self) -> bool:
        sleep = 0.001
        mtime, changed = None, time.monotonic()
        while True:
            try:
                os.symlink(self._lock_target_file, self._lock_file)
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
                                    self._lock_file, self.grace_period, self._read_holder() or "unknown")
                        try:
                            self.release()
                        except RuntimeError:  # released by its holder or another waiter meanwhile
                            pass
                        continue
                time.sleep(sleep)
                sleep = min(sleep * 2, 0.05)
                continue
            tmp = f"{self._holder_file}.{os.getpid()}"
            with open(tmp, "w") as handle:
                handle.write(_me())
            os.replace(tmp, self._holder_file)
            return True

    def release(self) -> None:
        try:
            os.unlink(self._holder_file)
        except FileNotFoundError:
            pass
        super().release()
