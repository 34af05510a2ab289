"""report.markdown: make_report and compare -- console text, report.md and the plots it embeds."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from effnas.io import write_table
from report import compare, main, make_report, param_importances


def test_grid_report(grid_folder: Path, tmp_path: Path, frames: dict, check_pngs, check_markdown) -> None:
    rep = make_report(grid_folder, tmp_path / "g", top=4)
    assert rep.kinds == ["grid"]
    pngs = check_pngs(tmp_path / "g", {"grid_heatmap.png", "grid_scatter.png"})
    text = check_markdown(tmp_path / "g" / "report.md", pngs)
    assert "Chosen coefficients" in text and "alpha: 1.2" in text and "γ = 1.20" in text
    assert text.count("| compound") == int((frames["grid"]()["kind"] == "compound").sum())  # the whole grid
    assert "more rows in report.md" in rep.text  # the console shows --top rows
    assert "accuracy (%)" in rep.markdown and "FLOPs ratio" in rep.markdown
    assert "| duplicate_of" not in rep.markdown  # a schema column without any value is not shown


def test_a_re_ranked_grid_shows_its_candidates_and_re_evaluations_apart(grid_folder: Path, tmp_path: Path,
                                                                        frames: dict) -> None:
    import yaml

    from effnas.results import GRID

    grid = frames["grid"]()
    top = grid.loc[grid["accuracy"].idxmax()]
    again = [{**top.to_dict(), "number": len(grid) + s, "accuracy": 0.9 + s / 100, "rerank_of": int(top["number"]),
              "rerank_seed": s} for s in range(2)]
    folder = tmp_path / "reranked"
    write_table(GRID.frame([*grid[list(GRID.columns)].to_dict("records"), *again]), folder, "grid")
    candidates = [{"trial": int(top["number"]), **{n: float(top[n]) for n in ("alpha", "beta", "gamma")},
                   "arch": "a", "proxy_accuracy": float(top["accuracy"]), "seeds_done": 2, "accuracies": [0.9, 0.91],
                   "accuracy_mean": 0.905, "accuracy_sd": 0.007}]
    (folder / "coefficients.yaml").write_text(yaml.safe_dump({
        "alpha": float(top["alpha"]), "beta": float(top["beta"]), "gamma": float(top["gamma"]), "selected_by": "rerank",
        "rerank": {"protocol": {"k": 1, "seeds": 2, "epochs": 2, "train_size": 20000}, "complete": True,
                   "candidates": candidates, "proxy_choice": int(top["number"])}}))
    rep = make_report(folder, tmp_path / "out", plots=False)
    assert f"Grid ({len(grid)} points" in rep.text  # the re-evaluations are not points
    assert "Re-evaluations of the top networks (2 trials" in rep.text
    assert "the top 1 networks re-trained with 2 seeds, 2 epochs on 20000 images" in rep.text
    assert "re-evaluated mean (%)" in rep.text and "90.50" in rep.text
    assert '"candidates"' not in rep.text  # a table, not the record's JSON


def test_family_report(family_folder: Path, tmp_path: Path, check_pngs, check_markdown) -> None:
    rep = make_report(family_folder, tmp_path / "f")
    pngs = check_pngs(tmp_path / "f", {"family_scaling.png"})
    text = check_markdown(tmp_path / "f" / "report.md", pngs)
    for name in [f"B{i}" for i in range(8)]:
        assert f"| {name} " in text
    assert "FLOPs / (2^φ·B0)" in rep.text


def test_report_without_plots_or_file(real_run: Path, tmp_path: Path) -> None:
    rep = make_report(real_run, tmp_path / "r", plots=False, write=False)
    assert rep.plots == [] and rep.markdown_path is None and not (tmp_path / "r").exists()
    assert "Leaderboard (top 10" in rep.text and re.search(r"\|\s+rank\s+\|", rep.markdown)
    with pytest.raises(ValueError, match="top must be a positive integer"):
        make_report(real_run, top=0)


def test_table_fallback_and_comparison(real_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       check_pngs, check_markdown) -> None:
    """A second study (e.g. random search): importance from its table; then the two side by side,
    each report written into its own folder and the comparison beside them."""
    tiny = tmp_path / "tiny"
    shutil.copytree(real_run, tiny)
    raw = pd.read_parquet(real_run / "trials.parquet")
    other = pd.concat([raw, raw.assign(number=raw["number"] + len(raw))], ignore_index=True)
    done = other["state"] == "COMPLETE"
    other.loc[done, "reward"] = np.random.default_rng(0).uniform(0.1, 0.9, int(done.sum()))
    folder = tmp_path / "random"
    write_table(other, folder, "trials")
    imp, note = param_importances(folder)
    assert imp is not None and "trials table" in note and imp.sum() == pytest.approx(1.0)

    main([str(tiny), str(folder), "--top", "2"])
    stdout = capsys.readouterr().out
    assert "Comparison: tiny vs random" in stdout and "best reward" in stdout
    for study in (tiny, folder):
        check_markdown(study / "report.md", check_pngs(study, {"history.png", "pareto.png", "importance.png"}))
    check_pngs(tmp_path, {"comparison_history.png"})
    cmp_md = (tmp_path / "comparison.md").read_text()
    assert "(tiny/report.md)" in cmp_md and "(random/report.md)" in cmp_md
    table, _ = compare([tiny, folder], tmp_path / "cmp2", plots=False)
    assert table["study"].tolist() == ["tiny", "random"]
    assert table.loc[1, "best reward"] == f"{other.loc[done, 'reward'].max():.4f}"
    assert table.loc[1, "trials"] == str(len(other))


@pytest.mark.parametrize("selected, cell", [(None, "-"), ({}, "-"), ({"trial": None, "by": "rerank"}, "-"),
                                            ({"trial": 0, "by": None}, "0 (-)"), ({"trial": 7, "by": "rerank"}, "7 (rerank)")])
def test_selected_cell(selected, cell) -> None:
    from report.markdown import _selected_cell

    assert _selected_cell(selected) == cell


@pytest.mark.parametrize("plain_costs, noted", [(True, True), (False, False)])
def test_report_says_what_the_accuracy_follows(tmp_path: Path, plain_costs: bool, noted: bool) -> None:
    from effnas.results import TRIALS

    rows = [dict(number=i, state="COMPLETE", reward=0.5, flops=1_000_000 + 1000 * (i * 7 % 12),
                 params=2_000_000 + i, plain_layers=i % 6,
                 accuracy=(0.9 - 0.05 * (i % 6)) if plain_costs else 0.5 + 0.01 * i) for i in range(12)]
    write_table(TRIALS.frame(rows), tmp_path / "study", "trials")
    rep = make_report(tmp_path / "study", plots=False, write=False)
    assert "What the accuracy follows (Spearman rank correlation, 12 complete trials)" in rep.text
    line = next(l for l in rep.text.splitlines() if "layers without a shortcut" in l and "FLOPs" in l)
    assert ("layers without a shortcut -1.00" in line) is plain_costs
    assert ("the search's scores favour networks that train fast in few steps" in rep.text) is noted
