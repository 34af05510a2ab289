"""The console scripts that train (``nas-search``, ``nas-train``, ``scale-search``, ``scale-family``).

Each first starts its process again with tcmalloc preloaded where :mod:`effnas.allocator` says so --
here, before the command's own modules (and torch) are imported, since an allocator cannot be
swapped in a running process -- and then runs the command (``nas.cli``, ``scaling_search.cli``).
Nothing else changes: the restarted process sees the same command line and environment plus
``LD_PRELOAD``. (``nas-report`` does not train and starts as it is.)
"""

from __future__ import annotations

import importlib
import sys

from . import allocator
from .cli import fail

__all__ = ["nas_search", "nas_train", "scale_search", "scale_family"]


def _with_allocator() -> None:
    """Start this process again with tcmalloc in ``LD_PRELOAD`` (does not return), or return where
    nothing is to be done. A bad ``EFFNAS_ALLOCATOR``, or ``tcmalloc`` asked for and not installed:
    one line on stderr, exit 2. Only in a process the interpreter started for the script itself
    (``sys.argv[0]`` on its command line): a Python caller's process is never started again."""
    script = sys.argv[0] if sys.argv else ""
    try:
        preload = allocator.preload_for(allocator.choice())
    except ValueError as exc:
        fail(str(exc))
    if preload is None or "torch" in sys.modules or script not in getattr(sys, "orig_argv", [])[1:]:
        return
    allocator.restart_with(preload, [sys.executable, *sys.orig_argv[1:]])


def _run(target: str) -> None:
    """Start again with the allocator, then import ``module:function`` and call it. The commands are
    named here, not imported: their modules import torch, and the engine knows nothing of the
    stages (tests/test_layers.py)."""
    _with_allocator()
    module, function = target.split(":")
    getattr(importlib.import_module(module), function)()


def nas_search() -> None:
    _run("nas.cli:search_main")


def nas_train() -> None:
    _run("nas.cli:train_main")


def scale_search() -> None:
    _run("scaling_search.cli:search_main")


def scale_family() -> None:
    _run("scaling_search.cli:family_main")
