"""Thread defaults: ``proxy.threads: null`` follows the CPUs the process may use, an explicit count
wins, the OpenMP wait policy is an environment default set before torch loads (never replacing
the user's), and training leaves torch's thread count as it found it. No timings here: the effect
on speed is measured by ``bench/contention.py``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import effnas.threads
from effnas.threads import configure, default_threads, resolve_threads

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CAPS = ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS")


@pytest.fixture()
def six_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """An affinity mask of 6 CPUs and no capping variables."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    for name in CAPS:
        monkeypatch.delenv(name, raising=False)


# ------------------------------------------------------------------------------- how many threads


def test_default_threads_follow_the_affinity_mask(six_cpus) -> None:
    assert effnas.threads.available_cpus() == 6
    assert default_threads() == 6


@pytest.mark.parametrize("env, expected", [
    ({"SLURM_CPUS_PER_TASK": "4"}, 4),
    ({"SLURM_CPUS_PER_TASK": "16"}, 6),          # a cap, never more than the mask allows
    ({"OMP_NUM_THREADS": "3"}, 3),               # the user's own setting
    ({"OMP_NUM_THREADS": "2,1"}, 2),             # OpenMP's nested form: the outer level
    ({"SLURM_CPUS_PER_TASK": "4", "OMP_NUM_THREADS": "5"}, 4),
    ({"SLURM_CPUS_PER_TASK": "", "OMP_NUM_THREADS": "junk"}, 6),  # unreadable values are ignored
    ({"OMP_NUM_THREADS": "0"}, 6),
])
def test_default_threads_capped_by_slurm_and_omp(six_cpus, monkeypatch: pytest.MonkeyPatch, env, expected) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert default_threads() == expected
    assert default_threads(dict(env)) == expected  # an explicit environment mapping reads the same


def test_without_an_affinity_mask_all_cpus_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 5)
    assert effnas.threads.available_cpus() == 5
    assert default_threads({}) == 5


def test_explicit_threads_win(six_cpus, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert resolve_threads(5) == 5
    assert resolve_threads(None) == 1


# ------------------------------------------------------------------------------- the wait policy


def test_configure_sets_defaults_and_keeps_the_users_values() -> None:
    env: dict[str, str] = {}
    assert configure(env) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert configure(env) == {}  # idempotent
    for own in ("ACTIVE", "passive", ""):
        env = {"OMP_WAIT_POLICY": own}
        assert configure(env) == {} and env == {"OMP_WAIT_POLICY": own}


def test_configure_after_torch_says_it_is_too_late_for_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_WAIT_POLICY", "-")  # so that teardown restores the variable as it was
    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert "torch" in sys.modules
    with pytest.warns(RuntimeWarning, match="already imported"):
        assert configure() == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"  # still set, for processes started later


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_DISPLAY_ENV")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return {**env, **extra}


def _gnu_openmp() -> bool:
    return "OpenMP" in torch.__config__.parallel_info() and any(
        "libgomp" in p.name for p in (Path(torch.__file__).parent / "lib").glob("*"))


@pytest.mark.skipif(not _gnu_openmp(), reason="the spin count is GNU OpenMP's (torch's CPU wheels)")
@pytest.mark.parametrize("own, spin", [(None, "0"), ("ACTIVE", "30000000000")])
def test_the_policy_reaches_the_openmp_runtime(own: str | None, spin: str) -> None:
    """configure() before ``import torch``: the runtime itself reports a spin count of 0 (PASSIVE);
    a policy the user set is the one the runtime uses."""
    env = _clean_env(OMP_DISPLAY_ENV="VERBOSE", **({"OMP_WAIT_POLICY": own} if own else {}))
    code = "import effnas.threads; effnas.threads.configure(); import torch; torch.ones(64).sum()"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"GOMP_SPINCOUNT = '{spin}'" in proc.stderr, proc.stderr[-2000:]


def print_env_task(cfg) -> int:
    """A task for ``run_app`` in the subprocess below: what the environment and the config say."""
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '<unset>')}")
    print(f"config={type(cfg).__name__} proxy.threads={cfg.proxy.threads}")
    return 0


@pytest.mark.parametrize("own", [None, "ACTIVE"])
def test_run_app_sets_env_defaults_without_overriding(tmp_path: Path, own: str | None) -> None:
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(HERE)!r})
        from test_threads import print_env_task
        from effnas.cli import run_app
        import nas.config  # registers the nas_search root schema
        sys.exit(run_app("nas_search", print_env_task, ["results_dir={tmp_path / 'results'}"]))
    """)
    env = _clean_env(**({"OMP_WAIT_POLICY": own} if own else {}))
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"OMP_WAIT_POLICY={own or 'PASSIVE'}" in proc.stdout.splitlines(), proc.stdout
    assert "proxy.threads=None" in proc.stdout and "config=<unset>" not in proc.stdout


# ------------------------------------------------------------------------------- the training loop


@pytest.fixture(scope="module")
def tiny():
    from effnas.data import load_splits
    from search_space import reference_spec, scale_spec

    data = load_splits("fashion_mnist", resolution=32, minival_size=100, train_size=256, seed=0)
    spec = scale_spec(reference_spec("efficientnet-b0", num_classes=10, in_channels=1), width=0.25, depth=0.25,
                      resolution=32)
    return spec, data


class Stop(Exception):
    pass


@pytest.mark.parametrize("threads, expected", [(None, 2), (3, 3)])
def test_training_uses_the_count_and_restores_torchs(tiny, one_thread, monkeypatch: pytest.MonkeyPatch,
                                                       threads: int | None, expected: int) -> None:
    from effnas.train import TrainConfig, train_and_evaluate

    spec, data = tiny
    monkeypatch.setattr(effnas.threads, "available_cpus", lambda: 2)
    for name in CAPS:
        monkeypatch.delenv(name, raising=False)
    cfg = TrainConfig(epochs=1, batch_size=128, threads=threads, bn_recalibrate_batches=1, eval_batch_size=100)
    seen: list[int] = []
    train_and_evaluate(spec, data, cfg, on_epoch=lambda e, a: seen.append(torch.get_num_threads()))
    assert seen == [expected]
    assert torch.get_num_threads() == 1

    def stop(epoch: int, accuracy: float) -> None:  # a pruner stopping the trial: restored all the same
        seen.append(torch.get_num_threads())
        raise Stop()

    with pytest.raises(Stop):
        train_and_evaluate(spec, data, cfg, on_epoch=stop)
    assert seen == [expected, expected]
    assert torch.get_num_threads() == 1


def test_torch_threads_sets_and_restores(one_thread) -> None:
    from effnas.threads import torch_threads

    with torch_threads(3) as n:
        assert n == 3 and torch.get_num_threads() == 3
    assert torch.get_num_threads() == 1
    with pytest.raises(KeyboardInterrupt), torch_threads(2):  # Ctrl-C in a trial: restored all the same
        raise KeyboardInterrupt
    assert torch.get_num_threads() == 1
