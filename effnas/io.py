"""Atomic, umask-respecting file writers: a reader -- or another worker writing at the same moment --
sees either the old or the new file, never a torn one.

Each file is written to a temporary name in the same folder and ``os.replace``-d into place. The
temporary file is created private (``mkstemp``) and given the permissions an ordinary ``open``
would (``0o666`` minus the umask) before it is renamed, so a team sharing ``results/`` can read it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd

__all__ = ["atomic_write", "write_table", "write_json", "write_text", "file_mode", "remove_stale_temp", "locked",
           "Busy"]

_OWNER = f"{socket.gethostname()}-{os.getpid()}"  # in temporary names: whose they are
_TEMP = re.compile(r"^\..+\.(?P<host>[^.]+)-(?P<pid>\d+)\.[^.]+\.tmp$")


def remove_stale_temp(folder: str | os.PathLike) -> list[Path]:
    """Remove temporary files left in ``folder`` by writers of this host that died mid-write
    (SIGKILL, out of memory); other hosts' and live processes' files are kept."""
    removed = []
    host = socket.gethostname()
    for path in Path(folder).glob(".*.tmp"):
        m = _TEMP.match(path.name)
        if m is None or m["host"] != host:
            continue
        try:
            os.kill(int(m["pid"]), 0)
            continue  # alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


def file_mode() -> int:
    """``0o666`` minus this process's umask: what ``open(path, "w")`` would create."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_OWNER}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_table(df: pd.DataFrame, folder: str | os.PathLike, stem: str) -> tuple[Path, Path]:
    """Write ``<stem>.parquet`` and ``<stem>.csv`` atomically; returns both paths."""
    folder = Path(folder)
    parquet, csv = folder / f"{stem}.parquet", folder / f"{stem}.csv"
    atomic_write(parquet, lambda p: df.to_parquet(p, index=False))
    atomic_write(csv, lambda p: df.to_csv(p, index=False))
    return parquet, csv


def write_json(data: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    atomic_write(path, lambda p: Path(p).write_text(json.dumps(data, indent=2, sort_keys=False,
                                                                default=str) + "\n"))
    return path


def write_text(text: str, path: str | os.PathLike) -> Path:
    path = Path(path)
    atomic_write(path, lambda p: Path(p).write_text(text))
    return path


class Busy(ValueError):
    """Another process holds the lock (:func:`locked` with ``wait=False``); one line, naming it."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is held by {holder}")
        self.path, self.holder = path, holder


@contextlib.contextmanager
def locked(path: str | os.PathLike, *, wait: bool = True, owned: bool = False) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the file ``path`` (created if missing) for the block. The
    kernel releases it when the process dies, however it dies.

    ``wait=False``: raise :class:`Busy` at once if another process holds it (the message names the
    holder, ``<host>:<pid>``, which is written into the file). ``owned=True``: the file is this
    block's alone -- it is removed at the end (a waiter that opened it before the removal notices
    and takes the new file instead); without it the file stays, as a lock shared by many blocks must."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, file_mode())
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                raise Busy(path, holder) from None
            try:
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    break
            except FileNotFoundError:
                pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # removed (and maybe re-made) by its last holder meanwhile: take the file now there
    try:
        if not wait:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{socket.gethostname()}:{os.getpid()}".encode(), 0)
        yield
    finally:
        if owned:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        os.close(fd)
