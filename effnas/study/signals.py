"""SIGINT / SIGTERM as an exception in the main thread, held back while the worker talks to storage.

Inside :func:`handle_signals`, SIGINT and SIGTERM end the running trial as FAIL with
``reason = "interrupted by SIGTERM"`` and raise :class:`Interrupted` to the caller, which writes its
results and exits 130 / 143. A signal that arrives while the worker talks to the storage (optuna's
own bookkeeping between trials, or a storage call inside the objective) is held until that call is
over: a journal lock or a database transaction is never cut in half.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

__all__ = ["Interrupted", "handle_signals", "interruptible", "raise_pending", "exit_code"]

log = logging.getLogger("effnas")


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread on SIGINT / SIGTERM; optuna fails the running trial and re-raises.
    ``detail``, when a command sets it, is what its one-line message says was kept."""

    def __init__(self, signame: str) -> None:
        super().__init__(signame)
        self.signame = signame
        self.detail: str | None = None


class _SignalState:
    """Where a signal may raise (``armed``) and the one that waits for such a place (``pending``)."""

    def __init__(self) -> None:
        self.installed = False
        self.armed = True
        self.pending: str | None = None
        self.delivered = False  # one Interrupted per run: later signals do not cut the clean-up short


_SIGNALS = _SignalState()


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


# Code that must not be cut in half by an exception from a signal handler: a journal write holds
# a lock file, a database call a transaction; and the import machinery, whose module-lock weakref
# callbacks swallow an exception raised in them ("Exception ignored in ... cb"): a SIGINT that
# landed there during a lazy import was lost and the run went on to exit 0.
_UNSAFE_MODULES = ("optuna.storages", "sqlalchemy", "psycopg2", "importlib", "_frozen_importlib")
_REDELIVER_SECONDS = 0.05


def _in_unsafe_call(frame: Any) -> bool:
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).startswith(_UNSAFE_MODULES):
            return True
        frame = frame.f_back
    return False


def raise_pending() -> None:
    if _SIGNALS.installed and _SIGNALS.pending and _in_main_thread():
        name, _SIGNALS.pending = _SIGNALS.pending, None
        if not _SIGNALS.delivered:
            _SIGNALS.delivered = True
            raise Interrupted(name)


@contextmanager
def handle_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM (what SLURM sends before preemption) into :class:`Interrupted`.

    Raised at once where code runs under ``interruptible(True)`` (the default: training, sleeps),
    and at the end of an ``interruptible(False)`` block otherwise (storage calls). No-op outside the
    main thread."""
    if not _in_main_thread():
        yield
        return

    def on_signal(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if _SIGNALS.delivered:
            log.warning("%s received again: still writing the results, please wait", name)
            return
        if _SIGNALS.armed and not _in_unsafe_call(frame):
            _SIGNALS.pending, _SIGNALS.delivered = None, True
            raise Interrupted(name)
        _SIGNALS.pending = _SIGNALS.pending or name
        if _SIGNALS.armed:  # a storage call inside the objective: deliver again once it is over
            timer = threading.Timer(_REDELIVER_SECONDS, os.kill, (os.getpid(), signum))
            timer.daemon = True
            timer.start()

    before = (_SIGNALS.installed, _SIGNALS.armed, _SIGNALS.pending, _SIGNALS.delivered)
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    _SIGNALS.installed, _SIGNALS.armed, _SIGNALS.pending, _SIGNALS.delivered = True, True, None, False
    try:
        yield
        raise_pending()  # a signal held back during the last storage call is not lost
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _SIGNALS.installed, _SIGNALS.armed, _SIGNALS.pending, _SIGNALS.delivered = before


@contextmanager
def interruptible(allowed: bool) -> Iterator[None]:
    """Within :func:`handle_signals`: may a signal raise here (``True``), or must it wait until the
    block is left (``False``)? Entering an allowed block raises a held signal at once."""
    if not _in_main_thread():
        yield
        return
    before = _SIGNALS.armed
    _SIGNALS.armed = allowed
    try:
        if allowed:
            raise_pending()
        yield
    finally:
        _SIGNALS.armed = before
    if not before:
        return
    raise_pending()



def exit_code(signame: str) -> int:
    """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + (signal.SIGTERM if signame == "SIGTERM" else signal.SIGINT)
