"""The memory allocator the command-line tools train with: tcmalloc where it is installed.

A training step allocates and frees the same large activation buffers over and over. glibc's
malloc hands big blocks back to the system and takes them again (page faults at every step);
tcmalloc keeps them. Measured with ``bench/allocator.py`` (2026-12-01, EfficientNet-B0, 1 epoch on
6,400 images, one thread a process, two processes side by side): tcmalloc trains **1.077x** as
fast as glibc's malloc (2,550 page faults a step vs 4,400-4,600), with the same accuracy to the
last digit; jemalloc 0.868x, glibc with raised thresholds 0.998x.

An allocator cannot be swapped inside a running process, so the tools (``nas-search``,
``nas-train``, ``scale-search``, ``scale-family``) start again at once -- an ``exec`` of the same
command line, before anything else is imported or written -- with ``libtcmalloc_minimal`` in
``LD_PRELOAD``, which every process they start inherits (workers, launcher jobs, trainings).
``EFFNAS_ALLOCATOR`` chooses:

* ``auto`` (default): tcmalloc when it is installed (Debian/Ubuntu: ``apt-get install
  libtcmalloc-minimal4``; elsewhere gperftools), else the system's malloc; a preload of your own
  (``LD_PRELOAD`` already set) is left as it is.
* ``tcmalloc``: tcmalloc or a one-line error.
* ``system``: the system's malloc, no restart.

SLURM jobs (``hydra/launcher=slurm``) run on other machines: the launcher submits without the
preload the restart set (:func:`without_own_preload`) and the job script sets it again where the
node has tcmalloc (:func:`node_setup`) -- a node without it would print an ld.so error per process.

Linux only (``LD_PRELOAD``); elsewhere nothing happens. From Python nothing happens either: the
restart is for console scripts, whose process holds nothing yet (``LD_PRELOAD=libtcmalloc_minimal.so.4
python your_script.py`` does the same for a script of your own).
"""

from __future__ import annotations

import contextlib
import ctypes.util
import os
import shlex
import sys
from typing import Iterator, MutableMapping, Optional, Sequence

__all__ = ["ENV", "CHOICES", "LIBRARY", "MARK", "choice", "find_tcmalloc", "preload_for", "in_use", "restart_with",
           "own_preload", "without_own_preload", "node_setup"]

ENV = "EFFNAS_ALLOCATOR"
MARK = "EFFNAS_PRELOADED"  # the LD_PRELOAD value the restart set: told apart from a preload of the user's own
CHOICES = ("auto", "tcmalloc", "system")
LIBRARY = "tcmalloc_minimal"  # gperftools' tcmalloc without the heap profiler


def choice(environ: Optional[MutableMapping[str, str]] = None) -> str:
    """``EFFNAS_ALLOCATOR`` (default ``auto``); a ``ValueError`` naming the valid values otherwise."""
    env = os.environ if environ is None else environ
    value = env.get(ENV, "").strip().lower() or "auto"
    if value not in CHOICES:
        raise ValueError(f"{ENV}={env.get(ENV)!r}: expected one of {', '.join(CHOICES)}")
    return value


def find_tcmalloc() -> Optional[str]:
    """The name the dynamic loader knows tcmalloc by (``libtcmalloc_minimal.so.4``), or None."""
    return ctypes.util.find_library(LIBRARY)


def preload_for(wanted: str, environ: Optional[MutableMapping[str, str]] = None) -> Optional[str]:
    """The ``LD_PRELOAD`` value to start again with for the choice ``wanted``, or None where there is
    nothing to do: ``system``; not Linux; tcmalloc already preloaded; a preload of the user's own
    (``auto``); tcmalloc not installed (``auto``). ``tcmalloc`` without it installed: ``ValueError``."""
    env = os.environ if environ is None else environ
    if wanted == "system" or not sys.platform.startswith("linux"):
        return None
    current = env.get("LD_PRELOAD", "").strip()
    if "tcmalloc" in current:  # tcmalloc in any form, ours or the user's
        return None
    if current and wanted == "auto":
        return None
    library = find_tcmalloc()
    if library is None:
        if wanted == "tcmalloc":
            raise ValueError(f"{ENV}=tcmalloc but lib{LIBRARY} is not installed (Debian/Ubuntu: apt-get install "
                             f"libtcmalloc-minimal4); use {ENV}=auto or system")
        return None
    return f"{library} {current}".strip()


def in_use() -> str:
    """``tcmalloc`` when this process has it loaded, else ``system`` (read from /proc/self/maps)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            return "tcmalloc" if any("libtcmalloc" in line for line in maps) else "system"
    except OSError:
        return "system"


def restart_with(preload: str, argv: Sequence[str]) -> None:
    """Replace this process by ``argv`` (``[python, ...]``) with ``preload`` in ``LD_PRELOAD``. Does not
    return."""
    os.environ["LD_PRELOAD"] = preload
    os.environ[MARK] = preload
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], list(argv))


def own_preload(environ: Optional[MutableMapping[str, str]] = None) -> Optional[str]:
    """The ``LD_PRELOAD`` this process's restart set, if it is still that (None: none, or the user's)."""
    env = os.environ if environ is None else environ
    mark = env.get(MARK)
    return mark if mark and env.get("LD_PRELOAD", "").strip() == mark.strip() else None


@contextlib.contextmanager
def without_own_preload(environ: Optional[MutableMapping[str, str]] = None) -> Iterator[Optional[str]]:
    """For the block, ``LD_PRELOAD`` and its mark without what the restart put there: processes it
    starts for other machines (``sbatch`` exports its environment to the job) do not carry a library
    the node may lack -- there every process would print an ld.so error. Yields the value removed
    (None: nothing of effnas's was there, nothing changes)."""
    env = os.environ if environ is None else environ
    own = own_preload(env)
    if own is None:
        yield None
        return
    del env["LD_PRELOAD"], env[MARK]
    try:
        yield own
    finally:
        env["LD_PRELOAD"], env[MARK] = own, own


def node_setup(preload: str) -> str:
    """A shell line for a job script that runs on another machine: preload ``preload`` there only
    where that machine has tcmalloc (``ldconfig`` lists it), else start without it, quietly."""
    library = preload.split()[0]
    return (f"if {{ /sbin/ldconfig -p || ldconfig -p; }} 2>/dev/null | grep -qF {shlex.quote(library)}; "
            f"then export LD_PRELOAD={shlex.quote(preload)} {MARK}={shlex.quote(preload)}; fi")
