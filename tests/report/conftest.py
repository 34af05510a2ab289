"""Shared fixtures of the report tests (test files are not a package: helpers live here).

The results folders are built with the writers' own code -- :func:`effnas.results.export_study`
for a study's trials, :meth:`effnas.results.Table.frame` and :func:`effnas.io.write_table` for the
grid and family tables -- so the report is tested against what the stages write, without training.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from PIL import Image

from effnas.io import write_json, write_table
from effnas.results import FAMILY, GRID, export_study
from search_space import count_flops, count_params, default_space, reference_spec

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    # one BLAS thread per process: the suite shares two cores; the checkout importable from anywhere
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


def run_report(*args: str | os.PathLike, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``nas-report ARGS`` in a fresh process (``python -m report``: the console script's ``main``)."""
    return subprocess.run([sys.executable, "-m", "report", *map(str, args)], capture_output=True, text=True,
                          env=_env(), cwd=cwd or ROOT, timeout=120)


# ----------------------------------------------------------------------------- a trials study


def _study_folder(folder: Path, n_trials: int = 4, pruned: tuple[int, ...] = (2,)) -> Path:
    """A results folder as ``nas-search`` leaves it, without training: a study over the default
    space (B0 enqueued first, then random choices), each trial's FLOPs, params and arch of the
    sampled network, a made-up accuracy; ``trials.parquet``/``.csv`` written by ``export_study``,
    ``best.json`` and ``config.yaml`` beside them."""
    space = default_space(num_classes=10, in_channels=1, resolution=32)
    target = float(count_flops(reference_spec("efficientnet-b0", num_classes=10, in_channels=1)
                               .replace(resolution=32), 32))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=folder.name, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    b0 = reference_spec("efficientnet-b0", num_classes=10, in_channels=1)
    study.enqueue_trial(space.params_of(b0, snap=True))
    for i in range(n_trials):
        trial = study.ask()
        spec = space.sample(trial)
        flops, params = count_flops(spec, 32), count_params(spec)
        accuracy = 0.70 + 0.03 * ((i * 7) % 5)
        for key, value in {"arch": spec.to_string(), "flops": flops, "params": params, "seed": i,
                           "resolution": 32, "worker": "host:4242"}.items():
            trial.set_user_attr(key, value)
        if i in pruned:
            trial.set_user_attr("epochs", 1)
            trial.set_user_attr("accuracy", accuracy - 0.1)
            trial.set_user_attr("reason", f"pruned by MedianPruner at epoch 1 (acc {accuracy - 0.1:.4f})")
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        reward = accuracy * (flops / target) ** -0.07
        for key, value in {"accuracy": accuracy, "reward": reward, "epochs": 2, "train_seconds": 1.5 + i}.items():
            trial.set_user_attr(key, value)
        study.tell(trial, reward)
    export_study(study, folder, space.param_names())
    best = max((t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE),
               key=lambda t: (t.user_attrs["reward"], -t.number))
    a = best.user_attrs
    write_json({"arch": a["arch"], "resolution": 32, "params": a["params"], "flops": a["flops"],
                "accuracy": a["accuracy"], "reward": a["reward"], "latency_ms": None, "dataset": "fashion_mnist",
                "T": target, "w": -0.07, "alpha": -0.07, "beta": -0.07, "metric": "flops",
                "study": study.study_name, "trial": best.number, "seed": a["seed"], "choices": dict(best.params)},
               folder / "best.json")
    (folder / "config.yaml").write_text(yaml.safe_dump({"sampler": {"name": "random"},
                                                        "objective": {"metric": "flops", "target": "auto"}}))
    return folder


@pytest.fixture(scope="session")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny nas-search-like study (4 trials: 3 complete, 1 pruned): its results folder."""
    folder = _study_folder(tmp_path_factory.mktemp("nas_runs") / "tiny")
    assert (folder / "trials.parquet").is_file() and (folder / "best.json").is_file()
    return folder


# ------------------------------------------------------------------------------ grid and family


def grid_frame() -> pd.DataFrame:
    """A scale-search grid (the schema's columns, then two extra ones): the constrained
    (alpha, beta, gamma) points plus one-axis scalings."""
    rows = []
    steps = np.round(np.arange(1.0, 1.81, 0.1), 2)
    for a in steps:
        for b in steps:
            for g in steps:
                product = a * b * b * g * g
                if abs(product - 2) <= 0.15:
                    acc = 0.8 - 0.3 * (a - 1.2) ** 2 - 0.4 * (b - 1.1) ** 2 - 0.3 * (g - 1.2) ** 2
                    rows.append(dict(alpha=a, beta=b, gamma=g, product=product, flops_ratio=product * 0.97,
                                     accuracy=acc, params=int(4e6 * a * b * b), flops=int(8.3e6 * product),
                                     resolution=int(round(32 * g)), kind="compound"))
    for kind, col in (("depth", "alpha"), ("width", "beta"), ("resolution", "gamma")):
        coef = {**dict(alpha=1.0, beta=1.0, gamma=1.0), col: 2.0}
        product = coef["alpha"] * coef["beta"] ** 2 * coef["gamma"] ** 2
        rows.append(dict(**coef, product=product, flops_ratio=product, accuracy=None, params=int(4e6),
                         flops=int(8.3e6 * product), resolution=int(round(32 * coef["gamma"])), kind=kind))
    for i, row in enumerate(rows):
        row.update(number=i, state="COMPLETE", evaluated=row["accuracy"] is not None,
                   finished=pd.Timestamp("2026-01-02 03:04:05.123456") + pd.Timedelta(seconds=i))
    df = GRID.frame(rows, extra_columns=["evaluated", "finished"])
    df.loc[len(df) - 1, "params"] = pd.NA  # an integer column with a gap
    return df


def family_frame() -> pd.DataFrame:
    """A scale-family table with the schema's columns; accuracy for B0..B3 only."""
    rows = []
    for phi in range(8):
        d, w, r = 1.2 ** phi, 1.1 ** phi, int(round(224 * 1.15 ** phi))
        formula = (1.2 * 1.1 ** 2 * 1.15 ** 2) ** phi
        flops = int(390e6 * formula)
        rows.append(dict(name=f"B{phi}", phi=phi, depth=d, width=w, resolution=r, dropout=0.2 + 0.05 * phi,
                         params=int(5.3e6 * w * w * d), flops=flops, flops_ratio=flops / 390e6,
                         ideal_ratio=2.0 ** phi, ratio_vs_2phi=flops / 390e6 / 2 ** phi, formula_ratio=formula,
                         arch=f"stem=32 r1_k3_s11_e1_i32_o16 res={r}",
                         accuracy=0.77 + 0.01 * phi if phi < 4 else None,
                         train_seconds=30.0 * (phi + 1) if phi < 4 else None))
    return FAMILY.frame(rows)


@pytest.fixture(scope="session")
def grid_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("scale") / "grid-study"
    write_table(grid_frame(), folder, "grid")
    (folder / "coefficients.yaml").write_text(yaml.safe_dump({"alpha": 1.2, "beta": 1.1, "gamma": 1.2,
                                                              "tol": 0.15}))
    return folder


@pytest.fixture(scope="session")
def family_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("family") / "family-study"
    write_table(family_frame(), folder, "family")
    return folder


# ------------------------------------------------------------------------------------ checks


def _check_pngs(folder: Path, expected: set[str]) -> list[Path]:
    """Every PNG in ``folder`` opens and verifies as an image, and the expected ones are there."""
    pngs = sorted(folder.glob("*.png"))
    assert expected <= {p.name for p in pngs}, (expected, pngs)
    for p in pngs:
        assert p.stat().st_size > 0
        with Image.open(p) as im:
            im.verify()
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] >= 400 and im.size[1] >= 300
            im.load()
    return pngs


def _check_markdown(md: Path, pngs: list[Path]) -> str:
    text = md.read_text()
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    for p in pngs:
        assert os.path.relpath(p, md.parent) in linked, (p, linked)
    for rel in linked:  # every embedded plot exists, by a relative path
        assert not os.path.isabs(rel) and (md.parent / rel).is_file(), rel
    return text


def _one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr
    assert err.startswith("error: ") and "\n" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


@pytest.fixture
def check_pngs() -> Callable[[Path, set[str]], list[Path]]:
    return _check_pngs


@pytest.fixture
def check_markdown() -> Callable[[Path, list[Path]], str]:
    return _check_markdown


@pytest.fixture
def one_line_error() -> Callable[..., str]:
    return _one_line_error


@pytest.fixture
def report_process() -> Callable[..., subprocess.CompletedProcess]:
    return run_report


@pytest.fixture
def frames() -> dict[str, Callable[[], pd.DataFrame]]:
    """The grid and family frames the folders hold (builders: each call is a fresh frame)."""
    return {"grid": grid_frame, "family": family_frame}


def load_best(folder: Path) -> dict:
    return json.loads((folder / "best.json").read_text())


@pytest.fixture
def best_of() -> Callable[[Path], dict]:
    return load_best
