"""CPU threads for training, and an OpenMP wait policy that yields a busy core.

Two defaults keep a trial fast when other processes share the cores:

* **How many threads** (:func:`default_threads`, used by ``proxy.threads: null``): the CPUs this
  process may run on (``os.sched_getaffinity``: taskset, cgroup cpusets, SLURM's core binding),
  capped by ``SLURM_CPUS_PER_TASK`` and by ``OMP_NUM_THREADS`` when they are set. An explicit
  ``proxy.threads=N`` wins over all of them.
* **How idle threads wait** (:func:`configure`): ``OMP_WAIT_POLICY=PASSIVE``, so a thread that
  waits at the end of a parallel region sleeps instead of spinning. With GNU OpenMP's default
  (spin about 3 ms, ``GOMP_SPINCOUNT=300000``) a thread that finished its share burns the core
  the lagging thread -- or a neighbour process -- needs, and a trial next to a busy process was
  measured 3-30x slower than alone. PyTorch's CPU wheels use GNU OpenMP (``libgomp``);
  ``PASSIVE`` sets its spin count to 0 (and LLVM/Intel OpenMP's ``KMP_BLOCKTIME`` to 0), unless
  ``GOMP_SPINCOUNT`` / ``KMP_BLOCKTIME`` say otherwise.

The OpenMP runtime reads its environment once, when it is loaded -- when ``torch`` is imported --
so the policy must be in the environment before that. The command-line tools set it at the start
of :func:`effnas.cli.run_app` (for every process they start; see the README for the process that
imported torch already). From Python (a notebook, a test, your own script)::

    import effnas.threads
    effnas.threads.configure()      # before the first `import torch`
    import torch

or ``export OMP_WAIT_POLICY=PASSIVE`` in the shell. A value you set yourself is never replaced.
``OMP_DISPLAY_ENV=true`` makes the runtime print what it uses (``GOMP_SPINCOUNT = '0'``).
"""

from __future__ import annotations

import os
import sys
import warnings
from contextlib import contextmanager
from typing import Iterator, MutableMapping, Optional

__all__ = ["ENV_DEFAULTS", "configure", "available_cpus", "default_threads", "resolve_threads",
           "openmp_loaded", "torch_threads"]

# Environment defaults for the OpenMP runtime (set only where unset).
ENV_DEFAULTS: dict[str, str] = {"OMP_WAIT_POLICY": "PASSIVE"}

# Variables that cap the default thread count when set (first number of each).
_CAPS = ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS")


def openmp_loaded() -> bool:
    """Whether torch (and with it the OpenMP runtime, which has read its environment) is loaded."""
    return "torch" in sys.modules


def configure(environ: Optional[MutableMapping[str, str]] = None, *, warn: bool = True) -> dict[str, str]:
    """Put :data:`ENV_DEFAULTS` into ``environ`` (default ``os.environ``) where they are unset.

    Returns the variables it set. Call it before ``import torch``: afterwards this process's OpenMP
    runtime keeps the policy it started with (only processes started later get the new one), and
    with ``warn`` a :class:`RuntimeWarning` says so."""
    env = os.environ if environ is None else environ
    added = {}
    for name, value in ENV_DEFAULTS.items():
        if name not in env:  # the user's own value, even an empty one, stays
            env[name] = value
            added[name] = value
    if warn and added and environ is None and openmp_loaded():
        warnings.warn(f"effnas.threads.configure(): torch is already imported, so {', '.join(added)} only "
                      f"applies to processes started from now on; call it before importing torch",
                      RuntimeWarning, stacklevel=2)
    return added


def available_cpus() -> int:
    """The CPUs this process may run on (affinity mask; ``os.cpu_count()`` where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def _count(value: Optional[str]) -> Optional[int]:
    """A positive count from an environment value: ``"4"``; OpenMP's nested ``"4,2"`` gives 4."""
    if not value:
        return None
    try:
        n = int(value.split(",")[0].strip())
    except ValueError:
        return None
    return n if n >= 1 else None


def default_threads(environ: Optional[MutableMapping[str, str]] = None) -> int:
    """Torch threads for ``proxy.threads: null``: :func:`available_cpus`, capped by
    ``SLURM_CPUS_PER_TASK`` and ``OMP_NUM_THREADS`` when set."""
    env = os.environ if environ is None else environ
    n = available_cpus()
    for name in _CAPS:
        cap = _count(env.get(name))
        if cap is not None:
            n = min(n, cap)
    return n


def resolve_threads(threads: Optional[int], environ: Optional[MutableMapping[str, str]] = None) -> int:
    """``threads`` when given (``proxy.threads=N``), else :func:`default_threads`."""
    return int(threads) if threads else default_threads(environ)


@contextmanager
def torch_threads(threads: Optional[int]) -> Iterator[int]:
    """Run the block with ``torch.set_num_threads(resolve_threads(threads))`` and restore the
    previous count afterwards (also on an exception or ``KeyboardInterrupt``). Yields the count."""
    import torch  # here, not at module level: configure() must be callable before torch loads

    old = torch.get_num_threads()
    n = resolve_threads(threads)
    if n != old:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)
