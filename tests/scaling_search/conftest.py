"""Shared fixtures of the stage-2 tests (test files are not a package: helpers live here)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from effnas.data import get_source
from search_space import reference_spec, scale_spec

FASHION_ROOT = get_source("fashion_mnist").default_root
HAVE_FASHION = (FASHION_ROOT / "train-images-idx3-ubyte.gz").is_file()

# The proxy budget of every real run here: a few hundred images, one epoch, one thread.
TINY = ["proxy.train_size=256", "proxy.minival_size=200", "proxy.epochs=1", "proxy.batch_size=64",
        "proxy.threads=1", "proxy.bn_recalibrate_batches=2", "proxy.eval_batch_size=200"]
# A 3-point grid (checked by hand in test_grid.py): (1.1,1.1,1.2), (1.2,1.1,1.1), (1.2,1.1,1.2).
GRID3 = ["grid.alpha=[1.0,1.2]", "grid.beta=[1.0,1.1]", "grid.gamma=[1.0,1.2]", "grid.step=0.1",
         "grid.tol=0.25", "grid.mode=product", "min_base_resolution=32"]  # the hand-checked product grid
GRID3_POINTS = {(1.1, 1.1, 1.2), (1.2, 1.1, 1.1), (1.2, 1.1, 1.2)}
NO_RERANK = ["rerank=none"]  # scale-search only: the top networks' re-evaluation has tests of its own


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(one_thread_per_module):
    """Every module here on one torch thread (tests/conftest.py says why)."""


def narrow_base():
    """EfficientNet-B0 at width 0.25, depth 0.34 with the Fashion-MNIST head: 0.2M params, fast."""
    b0 = reference_spec("efficientnet-b0", num_classes=10, in_channels=1)
    return scale_spec(b0, width=0.25, depth=0.34).replace(resolution=32)


def write_best_json(path: Path) -> Path:
    """A best.json as nas-search writes it, for the narrow base."""
    spec = narrow_base()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"arch": spec.to_string(), "spec": spec.to_dict(), "resolution": 32,
                                "dataset": "fashion_mnist", "num_classes": 10, "in_channels": 1}, indent=2))
    return path


@pytest.fixture(scope="session")
def base_json(tmp_path_factory) -> Path:
    return write_best_json(tmp_path_factory.mktemp("base") / "best.json")


def run_cli(tool: str, cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([tool, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def popen_cli(tool: str, cwd: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([tool, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: bytes and mtime (ns)."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def st() -> SimpleNamespace:
    """The helpers above, for test modules (conftest is not importable under importlib mode)."""
    return SimpleNamespace(TINY=TINY, GRID3=GRID3, GRID3_POINTS=GRID3_POINTS, NO_RERANK=NO_RERANK, narrow_base=narrow_base,
                           write_best_json=write_best_json, run=run_cli, popen=popen_cli, snapshot=snapshot,
                           HAVE_FASHION=HAVE_FASHION)


@pytest.fixture
def needs_fashion() -> None:
    if not HAVE_FASHION:
        pytest.skip(f"Fashion-MNIST not installed at {FASHION_ROOT} (Debian package dataset-fashion-mnist)")
