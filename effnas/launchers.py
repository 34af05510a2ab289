"""``hydra/launcher=slurm``: hydra-submitit-launcher's SLURM launcher, waiting on its jobs with
``squeue`` where ``sacct`` cannot answer, and naming in one line the jobs that ended without a result.

submitit learns that a job ended from the job's result file, or from ``sacct``. A job that ends
without writing one -- cancelled (``scancel``), killed at its time limit, out of memory, its node
lost, or a worker that exits with an error code -- is only seen through sacct; on a cluster without
accounting (no slurmdbd: "Slurm accounting storage is disabled") sacct never answers and
hydra-submitit-launcher waits for ever. Here a job that sacct does not know is looked up with
``squeue``, which lists ended jobs for a while (``MinJobAge``, 300 s by default); a job squeue no
longer lists has ended. Every job is waited for; those that ended without a result are reported by
:class:`WorkerJobsFailed` (one line; ``nas-search`` exits 1). Their trials are not lost: a worker
interrupted by SIGTERM fails its trial and queues it again, and a killed worker's trial is failed
and retried by the other workers (heartbeats on PostgreSQL).
"""

from __future__ import annotations

import getpass
import logging
import os
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf

from .allocator import node_setup, own_preload, without_own_preload

__all__ = ["SlurmLauncher", "WorkerJobsFailed", "register_launchers", "squeue_states"]

log = logging.getLogger(__name__)

# squeue states of a job that is not over yet (anything else: it ended)
_LIVE = {"PENDING", "RUNNING", "SUSPENDED", "COMPLETING", "CONFIGURING", "RESIZING", "REQUEUED", "REQUEUE_FED",
         "REQUEUE_HOLD", "SIGNALING", "STAGE_OUT", "STOPPED", "PREEMPTED"}
_GONE = "ENDED"  # neither sacct nor squeue lists the job any more


class WorkerJobsFailed(RuntimeError):
    """Some launcher jobs (workers) ended without a result; the message is one line."""

    exit_code = 1


def squeue_states() -> dict[str, str] | None:
    """``{job id ("12_0" for an array task): state}`` of this user's jobs that squeue lists
    (ended ones too, for MinJobAge seconds); None when squeue cannot be asked."""
    from submitit.slurm.slurm import read_job_id

    try:
        done = subprocess.run(["squeue", "-h", "--states=all", "-o", "%i|%T", "-u", getpass.getuser()],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode:
        return None
    states: dict[str, str] = {}
    for line in done.stdout.splitlines():
        shown, _, state = line.strip().partition("|")
        try:
            for parts in read_job_id(shown):  # "12", "12_0", or "12_[3-7%2]": tasks 3..7 pending
                if len(parts) >= 3:
                    states.update({f"{parts[0]}_{t}": state for t in range(int(parts[1]), int(parts[2]) + 1)})
                else:
                    states["_".join(parts)] = state
        except (ValueError, IndexError):
            continue
    return states


def _watcher_class() -> type:
    from submitit.slurm.slurm import SlurmInfoWatcher

    class SqueueInfoWatcher(SlurmInfoWatcher):
        """submitit's sacct watcher; a job sacct does not know is looked up with squeue."""

        def update(self) -> None:
            super().update()
            unknown = [j for j in self._registered - self._finished if not self._info_dict.get(j, {}).get("State")]
            if not unknown:
                return
            states = squeue_states()
            if states is None:
                return
            for job_id in unknown:
                state = states.get(job_id, _GONE)
                if state in _LIVE:
                    continue  # sacct's "UNKNOWN" keeps it waiting
                self._info_dict[job_id] = {"JobID": job_id, "State": state}
                self._finished.add(job_id)

    return SqueueInfoWatcher


class SlurmLauncher(BaseSubmititLauncher):
    """hydra-submitit-launcher's ``SlurmLauncher`` (same config, ``submitit_slurm``) that ends
    when its jobs have ended, with or without SLURM accounting."""

    _EXECUTOR = "slurm"

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        # As BaseSubmititLauncher.launch (hydra-submitit-launcher 1.2), but jobs are watched with
        # squeue too and every job is waited for before a failure is reported.
        import submitit
        from submitit.core.utils import UncompletedJobError

        assert self.config is not None
        assert len(job_overrides) > 0
        params = dict(self.params)
        own = own_preload()  # tcmalloc as the submitting command preloaded it: not exported as it is
        if own is not None:  # (a node without it would print an ld.so error per process), but
            params["setup"] = [*(params.get("setup") or []), node_setup(own)]  # preloaded where it is installed
        init_keys = {"max_num_timeout", "submitit_folder"}
        init_params: Dict[str, Any] = {"folder": params["submitit_folder"]}
        if "max_num_timeout" in params:
            init_params[f"{self._EXECUTOR}_max_num_timeout"] = params["max_num_timeout"]
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init_params)
        baseparams = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in baseparams else f"{self._EXECUTOR}_{k}": v
                                      for k, v in params.items() if k not in init_keys})

        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {self.config.hydra.sweep.dir}")
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))

        job_params: List[Any] = []
        for idx, overrides in enumerate(job_overrides):
            idx = initial_job_idx + idx
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        with without_own_preload():  # sbatch exports its environment to the jobs
            jobs = executor.map_array(self, *zip(*job_params))
        # this launcher's own watcher: squeue when sacct has nothing, and at most a minute between
        # checks (submitit's SlurmJob: ten minutes)
        watcher = _watcher_class()(delay_s=60)
        for job in jobs:
            job.watcher = watcher
            watcher.register_job(job.job_id)

        returns: List[JobReturn] = []
        lost: List[str] = []
        for idx, (job, overrides) in enumerate(zip(jobs, job_overrides), start=initial_job_idx):
            try:
                returns.append(job.results()[0])
            except UncompletedJobError as exc:  # no result file: cancelled, killed, or exited early
                lost.append(_describe_lost(job, idx, overrides, exc))
        if lost:
            raise WorkerJobsFailed(f"{len(lost)} of {len(jobs)} SLURM jobs ended without a result: "
                                   f"{'; '.join(lost)}; their running trials are retried by the other "
                                   f"workers, and the same command resumes the study")
        return returns


def _describe_lost(job: Any, idx: int, overrides: Sequence[str], exc: Exception) -> str:
    """``job 12_0 (#0, worker=0) CANCELLED, log ...`` with the job's own ``error:`` line if it wrote one."""
    from submitit.core.utils import FailedJobError

    worker = next((o for o in overrides if o.startswith("worker=")), None)
    state = job.watcher.get_state(job.job_id, mode="cache")
    why = "raised an error" if isinstance(exc, FailedJobError) else \
        state if state not in ("UNKNOWN", _GONE) else "ended (no longer queued)"
    said = None
    try:
        with open(job.paths.stderr, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
            said = next((ln for ln in reversed(f.read().decode(errors="replace").splitlines())
                         if ln.startswith("error: ")), None)
    except OSError:
        pass
    return (f"job {job.job_id} (#{idx}{', ' + worker if worker else ''}) {why}"
            f"{f' ({said})' if said else ''}, log {job.paths.stderr}")


def register_launchers() -> None:
    """Make ``hydra/launcher=slurm`` instantiable. Hydra finds plugins by scanning the folders of
    the ``hydra_plugins`` namespace, which misses an editable install (``pip install -e``); a plugin
    registered by hand is found either way (``Plugins.register``)."""
    from hydra.core.plugins import Plugins
    from hydra_plugins.effnas_launcher import SlurmLauncher as plugin

    Plugins.instance().register(plugin)
