"""report.plots: each plot is a valid PNG, drawn without pyplot (a notebook's state is untouched)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pandas as pd

from report import load_results, param_importances
from report.plots import (plot_comparison, plot_family, plot_grid, plot_grid_scatter, plot_history, plot_importance,
                          plot_pareto)


def test_every_plot_leaves_pyplot_alone(real_run: Path, grid_folder: Path, family_folder: Path, tmp_path: Path,
                                        check_pngs) -> None:
    backend = matplotlib.get_backend()
    trials, grid, family = (load_results(f) for f in (real_run, grid_folder, family_folder))
    imp, note = param_importances(trials)
    assert imp is not None, note
    paths = [plot_history(trials, tmp_path / "history.png", "tiny", "flops", -0.07),
             plot_pareto(trials, tmp_path / "pareto.png", "tiny", 1e7),
             plot_importance(imp, tmp_path / "importance.png", "tiny", imp.attrs["trials"]),
             plot_importance(pd.Series({"lr": 0.4, "wd": 0.3, "batch": 0.2, "warmup": 0.05, "ema": 0.05}),
                             tmp_path / "bars.png", "other", 30),
             plot_grid(grid, tmp_path / "grid.png", "grid", {"alpha": 1.2, "beta": 1.1, "gamma": 1.2})[0],
             plot_grid_scatter(grid, tmp_path / "scatter.png", "grid"),
             plot_family(family, tmp_path / "family.png", "family"),
             plot_comparison([("a", trials), ("b", trials)], tmp_path / "comparison.png")]
    assert all(p is not None and p.parent == tmp_path for p in paths)
    check_pngs(tmp_path, {p.name for p in paths})
    assert matplotlib.get_backend() == backend
    pyplot = __import__("sys").modules.get("matplotlib.pyplot")
    assert pyplot is None or pyplot.get_fignums() == []  # no figure registered with pyplot


def test_grid_scatter_needs_accuracy(grid_folder: Path, tmp_path: Path) -> None:
    grid = load_results(grid_folder).assign(accuracy=float("nan"))
    assert plot_grid_scatter(grid, tmp_path / "scatter.png", "grid") is None
    path, what = plot_grid(grid, tmp_path / "ratio.png", "grid", None)  # the FLOPs ratio instead
    assert path.is_file() and "FLOPs ratio" in what
