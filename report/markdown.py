"""The report document: console text, ``report.md`` and plots for one results folder
(:func:`make_report`), and several studies side by side (:func:`compare`)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from effnas.io import write_text

from .analysis import (FOLLOWS, accuracy_follows, complete, leaderboard, pareto_front, param_importances, reevaluations,
                       summarize, to_float)
from .format import Doc, flops_scale, fmt, fmt_duration, generic_table, pct_scale, trial_table
from .load import ReportError, find_results, first_line, load_file, results_file
from .plots import (plot_comparison, plot_family, plot_grid, plot_grid_scatter, plot_history, plot_importance,
                    plot_pareto)

__all__ = ["Report", "make_report", "compare"]


@dataclass
class Report:
    """What :func:`make_report` / :func:`compare` produced: console text, Markdown, files."""

    folder: Path
    out: Path
    kinds: list[str]
    text: str
    markdown: str
    plots: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    markdown_path: Path | None = None


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path}: not readable JSON ({first_line(exc)})") from None
    return data if isinstance(data, dict) else None


def _read_yaml(path: Path) -> dict[str, Any] | None:
    import yaml

    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ReportError(f"{path}: not readable YAML ({first_line(exc)})") from None
    return data if isinstance(data, dict) else None


def _selected_cell(selected: dict[str, Any] | None) -> str:
    """The comparison table's "selected (best.json)" cell: ``trial (how)`` or ``-``."""
    if not selected or selected.get("trial") is None:
        return "-"
    return f"{selected['trial']} ({selected.get('by') or '-'})"


def _study_name(folder: Path) -> str:
    best = folder / "best.json"
    try:
        name = json.loads(best.read_text()).get("study") if best.is_file() else None
    except (OSError, ValueError, AttributeError):
        name = None
    return str(name) if name else folder.name


def _sampler_of(folder: Path) -> str | None:
    try:
        cfg = _read_yaml(folder / "config.yaml") or {}
    except ReportError:
        return None
    sampler = cfg.get("sampler")
    return str(sampler.get("name")) if isinstance(sampler, dict) and sampler.get("name") else None


def _target(best: dict[str, Any] | None, folder: Path) -> tuple[float | None, str | None]:
    if best and best.get("T") is not None:
        return float(best["T"]), best.get("metric")
    try:
        obj = (_read_yaml(folder / "config.yaml") or {}).get("objective") or {}
    except ReportError:
        return None, None
    t = obj.get("target")
    return (float(t), obj.get("metric", "flops")) if isinstance(t, (int, float)) and not isinstance(t, bool) \
        else (None, obj.get("metric"))


def _trials_section(doc: Doc, df: pd.DataFrame, folder: Path, out: Path, top: int, plots: bool,
                    rep: Report) -> None:
    best_json = _read_json(folder / "best.json")
    target, metric = _target(best_json, folder)
    s = summarize(df, best_json)
    study = _study_name(folder)
    sampler = _sampler_of(folder)
    states = ", ".join(f"{n} {k.lower()}" for k, n in s["states"].items()) or "none"
    doc.heading("Summary")
    doc.line(f"- study: {study}" + (f" (sampler: {sampler})" if sampler else ""))
    extra = [f"{n} {what}" for n, what in ((s["reevaluations"], "top-k re-evaluations"),
                                          (s["duplicates"], "repeated architectures, not trained")) if n]
    doc.line(f"- trials: {s['trials']} ({states})" + (f"; of them {', '.join(extra)}" if extra else ""))
    doc.line(f"- wall time: {fmt_duration(s['wall_seconds'])}, compute time (sum over trials): "
             f"{fmt_duration(s['compute_seconds'])}, workers: {s['workers'] if s['workers'] is not None else '-'}")
    if target is not None:
        unit = flops_scale([target]) if metric == "flops" else (1e6, "M params") if metric == "params" \
            else (1.0, "ms")
        w = best_json.get("w") if best_json else None
        cost = {"flops": "FLOPs", "params": "params", "latency": "latency"}.get(str(metric), str(metric))
        doc.line(f"- objective: reward = accuracy × ({cost} / T)^w, T = {target / unit[0]:.2f} {unit[1]}"
                 + (f", w = {w}" if w is not None else ""))
    b = s["best"]
    if b is None:
        doc.line("- best: no COMPLETE trial with a reward yet")
    else:
        fscale, funit = flops_scale([b["flops"]])
        acc = b["accuracy"] * pct_scale(df["accuracy"]) if b["accuracy"] is not None else None
        doc.line(f"- best by search reward: trial {b['trial']}, reward {b['reward']:.4f}, accuracy {fmt(acc, '.2f')}%, "
                 f"{fmt(None if b['flops'] is None else b['flops'] / fscale, '.2f')} {funit}, "
                 f"{fmt(None if b['params'] is None else b['params'] / 1e6, '.3f')}M params; found after "
                 f"{fmt_duration(b['seconds_to_best'])} ({b.get('finished_before_best', '-')} trials finished)")
        doc.line(f"  arch: {b['arch']}", f"  - arch: `{b['arch']}`")
    if s["best_accuracy"] is not None:
        doc.line(f"- best accuracy of any complete trial: {s['best_accuracy'] * pct_scale(df['accuracy']):.2f}%")
    selected = s.get("selected")
    if selected and selected.get("trial") is not None:
        doc.line(f"- selected (best.json): trial {selected['trial']}, by {selected.get('by') or '-'}")

    again = reevaluations(df)
    if not again.empty:
        doc.heading("Top-k re-evaluation (higher fidelity; best.json takes the best mean)")
        pct = pct_scale(df["accuracy"]) if "accuracy" in df.columns else 100.0
        fscale, funit = flops_scale([f for f in again["flops"] if f is not None and not pd.isna(f)] or [1.0])
        table = pd.DataFrame({
            "rank": [str(i) for i in range(1, len(again) + 1)],
            "trial": [str(int(c)) for c in again["candidate"]],
            "search reward": [fmt(to_float(v), ".4f") for v in again["proxy_reward"]],
            "seeds": [str(int(n)) for n in again["seeds"]],
            "mean reward": [fmt(to_float(v), ".4f") for v in again["reward_mean"]],
            "sd": [fmt(to_float(v), ".4f") for v in again["reward_sd"]],
            "mean accuracy (%)": [fmt(None if pd.isna(v) else v * pct, ".2f") for v in again["accuracy_mean"]],
            funit: [fmt(None if f is None or pd.isna(f) else f / fscale, ".2f") for f in again["flops"]],
        })
        doc.table(table)

    doc.heading(f"Leaderboard (top {top} by reward)")
    board = leaderboard(df, top) if ("reward" in df.columns or "accuracy" in df.columns) else df.iloc[0:0]
    table = trial_table(board, df)
    table.insert(0, "rank", [str(i) for i in range(1, len(table) + 1)])
    doc.table(table, table.drop(columns=["arch"], errors="ignore"))
    if "arch" in table.columns and not table.empty:
        doc.text.append("  arch strings:")
        doc.text += [f"    #{t}: {a}" for t, a in zip(table.get("trial", table["rank"]), table["arch"])]

    if "accuracy" in df.columns and "flops" in df.columns:
        front = pareto_front(df)
        doc.heading("Pareto front (accuracy up, FLOPs down; complete trials)")
        ft = trial_table(front, df)
        doc.table(ft, ft.drop(columns=["arch"], errors="ignore"))
    follows = accuracy_follows(df)
    if follows is not None:
        doc.heading(f"What the accuracy follows (Spearman rank correlation, {follows.attrs['trials']} complete trials)")
        doc.line("- " + ", ".join(f"{name} {rho:+.2f}" for name, rho in follows.items()))
        plain = follows.get(FOLLOWS["plain_layers"])
        size = max((abs(follows[n]) for n in (FOLLOWS["flops"], FOLLOWS["params"]) if n in follows), default=0.0)
        if plain is not None and plain < 0 and abs(plain) > size:
            doc.note("accuracy follows the count of layers without a shortcut more than the network's size: "
                     "the search's scores favour networks that train fast in few steps (README: 'And a count "
                     "ranks the proxy better than any supernet')")
    if not plots:
        return
    doc.heading("Plots")
    if "reward" in df.columns and "number" in df.columns and complete(df)["reward"].notna().any():
        p = plot_history(df, out / "history.png", study, metric, best_json.get("w") if best_json else None)
        rep.plots.append(p)
        doc.image(p, out, "best reward so far vs trial")
    else:
        doc.note("no complete trial with a reward yet: no history plot")
    if "accuracy" in df.columns and "flops" in df.columns and complete(df)["accuracy"].notna().any():
        p = plot_pareto(df, out / "pareto.png", study, target if metric == "flops" else None)
        rep.plots.append(p)
        doc.image(p, out, "accuracy vs FLOPs with the Pareto front")
        if target is not None and metric != "flops":
            doc.note(f"the target T is on {metric}, not FLOPs: no T line in the accuracy-vs-FLOPs plot")
    imp, note = param_importances(df)
    if imp is None:
        doc.note(f"stage-choice importance {note}")
        rep.notes.append(f"importance {note}")
    else:
        p = plot_importance(imp, out / "importance.png", study, imp.attrs["trials"])
        rep.plots.append(p)
        doc.image(p, out, "which stage choices matter")
        doc.note(note)
        top_imp = imp.head(5)
        doc.line("- most important choices: " + ", ".join(f"{k} {v * 100:.0f}%" for k, v in top_imp.items()))


def _has(df: pd.DataFrame, col: str) -> bool:
    """Whether the table has any ``col`` value (schema columns are always there, maybe all null)."""
    return col in df.columns and bool(df[col].notna().any())


_GRID_SPEC = {"kind": ("kind", "", 1), "alpha": ("α", ".3f", 1), "beta": ("β", ".3f", 1),
              "gamma": ("γ", ".3f", 1), "product": ("α·β²·γ²", ".3f", 1),
              "flops_ratio": ("FLOPs ratio", ".3f", 1), "accuracy": ("accuracy (%)", ".2f", 0.01),
              "resolution": ("resolution (px)", "", 1), "params": ("params (M)", ".3f", 1e6),
              "flops": ("MFLOPs", ".2f", 1e6)}


def _units_for(df: pd.DataFrame, base: dict, giga_format: str) -> dict:
    """A table spec with the accuracy column in % (whether stored as a fraction or already in %)
    and FLOPs in the unit that suits their size (``giga_format`` when that unit is GFLOPs)."""
    spec = dict(base)
    if _has(df, "accuracy") and pct_scale(df["accuracy"]) == 1.0:
        spec["accuracy"] = ("accuracy (%)", ".2f", 1)
    if _has(df, "flops"):
        fscale, funit = flops_scale(pd.to_numeric(df["flops"], errors="coerce"))
        spec["flops"] = (funit, giga_format if funit == "GFLOPs" else ".2f", fscale)
    return spec


def _grid_section(doc: Doc, df: pd.DataFrame, folder: Path, out: Path, top: int, plots: bool,
                  rep: Report) -> None:
    study = folder.name
    coef = _read_yaml(folder / "coefficients.yaml")
    doc.heading("Chosen coefficients (coefficients.yaml)")
    chosen = None
    if coef is None:
        doc.line("- no coefficients.yaml in this folder")
    else:
        first = [k for k in ("alpha", "beta", "gamma") if k in coef]
        coef = {**{k: coef[k] for k in first}, **{k: v for k, v in coef.items() if k not in first}}
        flat = {k: v for k, v in coef.items() if not isinstance(v, (dict, list))}
        for k, v in flat.items():
            doc.line(f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}")
        nested = {k: v for k, v in coef.items() if isinstance(v, (dict, list)) and k != "rerank"}
        for k, v in nested.items():
            doc.line(f"- {k}: {json.dumps(v, default=str)}")
        _rerank_lines(doc, coef.get("rerank"))
        chosen = {k: to_float(coef.get(k)) for k in ("alpha", "beta", "gamma")}
        if any(v is None for v in chosen.values()):
            inner = next((v for v in coef.values() if isinstance(v, dict) and "alpha" in v), None)
            chosen = {k: to_float(inner.get(k)) for k in ("alpha", "beta", "gamma")} if inner else None
    spec = _units_for(df, _GRID_SPEC, giga_format=".2f")
    # the top networks' re-evaluations (rerank_of) are another fidelity: shown apart, not as points
    again = df["rerank_of"].notna().to_numpy(dtype=bool) if "rerank_of" in df.columns else np.zeros(len(df), bool)
    reranks, df = df[again], df[~again]
    acc = _has(df, "accuracy")
    order = df.sort_values("accuracy", ascending=False, kind="stable", na_position="last") if acc else df
    doc.heading(f"Grid ({len(df)} points" + (", best accuracy first)" if acc else ")"))
    table = generic_table(order, spec)
    doc.table(table, table.head(top))
    if len(table) > top:
        doc.text.append(f"  ... {len(table) - top} more rows in report.md (--top sets how many are shown here)")
    if len(reranks):
        doc.heading(f"Re-evaluations of the top networks ({len(reranks)} trials, by the trial they re-train)")
        table = generic_table(reranks.sort_values(["rerank_of", "rerank_seed"], kind="stable"), spec)
        doc.table(table, table)
    if not plots:
        return
    doc.heading("Plots")
    if not all(_has(df, k) for k in ("alpha", "beta", "gamma")):
        doc.note("no α/β/γ values: no grid heat map")
    elif not (_has(df, "accuracy") or _has(df, "flops_ratio")):
        doc.note("no accuracy or flops_ratio values: no grid heat map")
    else:
        p, what = plot_grid(df, out / "grid_heatmap.png", study, chosen)
        rep.plots.append(p)
        doc.image(p, out, "alpha-beta grid heat map")
        doc.note(f"heat map at {what}")
    p2 = plot_grid_scatter(df, out / "grid_scatter.png", study)
    if p2 is not None:
        rep.plots.append(p2)
        doc.image(p2, out, "accuracy vs FLOPs ratio by scaling kind")


_RERANK_SPEC = {"trial": ("trial", "", 1), "alpha": ("α", ".3f", 1), "beta": ("β", ".3f", 1), "gamma": ("γ", ".3f", 1),
                "proxy_accuracy": ("proxy accuracy (%)", ".2f", 0.01),
                "accuracy_mean": ("re-evaluated mean (%)", ".2f", 0.01), "accuracy_sd": ("sd (%)", ".2f", 0.01),
                "seeds_done": ("seeds", "", 1)}


def _rerank_lines(doc: Doc, rerank: Any) -> None:
    """coefficients.yaml's re-ranking: its protocol, then one row per candidate network."""
    if not isinstance(rerank, dict):
        return
    proto = rerank.get("protocol") or {}
    doc.line(f"- rerank: the top {proto.get('k')} networks re-trained with {proto.get('seeds')} seeds, "
             f"{proto.get('epochs')} epochs on {proto.get('train_size') or 'all'} images"
             + ("" if rerank.get("complete") else " (not complete: the proxy's accuracy decides)")
             + ("" if rerank.get("proxy_choice") is None else f"; by proxy accuracy alone: trial {rerank['proxy_choice']}"))
    rows = pd.DataFrame([{k: row.get(k) for k in _RERANK_SPEC} for row in rerank.get("candidates") or []])
    if len(rows):
        table = generic_table(rows, _RERANK_SPEC)
        doc.table(table, table)


_FAMILY_SPEC = {"name": ("model", "", 1), "phi": ("φ", "g", 1), "depth": ("depth ×", ".3f", 1),
                "width": ("width ×", ".3f", 1), "resolution": ("resolution (px)", "", 1),
                "dropout": ("dropout", ".2f", 1), "params": ("params (M)", ".3f", 1e6),
                "flops": ("GFLOPs", ".3f", 1e9), "flops_ratio": ("FLOPs / B0", ".2f", 1),
                "ratio_vs_2phi": ("FLOPs / (2^φ·B0)", ".3f", 1), "accuracy": ("accuracy (%)", ".2f", 0.01)}


def _family_section(doc: Doc, df: pd.DataFrame, folder: Path, out: Path, plots: bool, rep: Report) -> None:
    spec = _units_for(df, _FAMILY_SPEC, giga_format=".3f")
    phi = _has(df, "phi")
    rows = df.sort_values("phi", kind="stable") if phi else df
    doc.heading(f"Family ({len(df)} models)")
    doc.table(generic_table(rows, spec))
    if _has(df, "arch"):
        names = rows["name"] if _has(df, "name") else rows.index
        doc.text.append("  arch strings:")
        doc.text += [f"    {n}: {a}" for n, a in zip(names, rows["arch"])]
        doc.md += ["", "Architectures:", ""] + [f"- {n}: `{a}`" for n, a in zip(names, rows["arch"])]
    if not plots:
        return
    doc.heading("Plots")
    if phi:
        p = plot_family(df, out / "family_scaling.png", folder.name)
        rep.plots.append(p)
        doc.image(p, out, "params and FLOPs vs phi")
    else:
        doc.note("no φ values: no family plot")


def make_report(path: str | os.PathLike, out: str | os.PathLike | None = None, *, top: int = 10,
                plots: bool = True, write: bool = True) -> Report:
    """Report on one results folder (or one results file): every table it holds (trials, grid,
    family), plots, and ``report.md`` in ``out`` (default: the folder itself)."""
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be a positive integer, got {top!r}")
    path = Path(path)
    first = results_file(path)
    folder = path if path.is_dir() else path.parent
    files = find_results(folder) if path.is_dir() else {"?": first}
    tables = dict(load_file(file) for file in files.values())
    if not path.is_dir():
        files = {next(iter(tables)): first}
    out_dir = Path(out) if out is not None else folder
    if write or plots:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ReportError(f"{out_dir}: cannot create the output folder ({first_line(exc)})") from None
    doc = Doc()
    title = f"Results report: {_study_name(folder)}"
    doc.heading(title, level=1)
    doc.line(f"folder: {folder.resolve()}", f"Folder: `{folder.resolve()}`; tables: "
             + ", ".join(f"`{f.name}`" for f in files.values()))
    rep = Report(folder=folder, out=out_dir, kinds=list(tables), text="", markdown="")
    for kind, df in tables.items():
        if len(tables) > 1:
            doc.heading(f"{kind} ({files[kind].name})", level=2)
        if kind == "trials":
            _trials_section(doc, df, folder, out_dir, top, plots, rep)
        elif kind == "grid":
            _grid_section(doc, df, folder, out_dir, top, plots, rep)
        else:
            _family_section(doc, df, folder, out_dir, plots, rep)
    rep.text = "\n".join(doc.text).strip("\n") + "\n"
    rep.markdown = re.sub(r"\n{3,}", "\n\n", "\n".join(doc.md).strip("\n")) + "\n"
    if write:
        rep.markdown_path = write_text(rep.markdown, out_dir / "report.md")
    return rep


def study_labels(folders: list[Path]) -> list[str]:
    """Short distinct labels: the folder names, or paths relative to their common parent."""
    names = [f.name for f in folders]
    if len(set(names)) == len(names):
        return names
    common = Path(os.path.commonpath([str(f.resolve()) for f in folders]))
    return [str(f.resolve().relative_to(common)) or f.name for f in folders]


def compare(paths: Sequence[str | os.PathLike], out: str | os.PathLike | None = None, *,
            plots: bool = True, write: bool = True) -> tuple[pd.DataFrame, Report]:
    """Side-by-side comparison of several trials folders (e.g. TPE vs random): trials by state,
    best reward and accuracy, trial and time to the best, wall time. Writes ``comparison.md``
    and ``comparison_history.png`` into ``out`` (default: the folders' common parent)."""
    folders = [Path(p) for p in paths]
    loaded = []
    for f in folders:
        file = results_file(f)
        kind, df = load_file(file)
        loaded.append((f if f.is_dir() else f.parent, kind, df))
    labels = study_labels([f for f, _, _ in loaded])
    rows = []
    for label, (folder, kind, df) in zip(labels, loaded):
        row: dict[str, Any] = {"study": label, "kind": kind}
        if kind == "trials":
            s = summarize(df, _read_json(folder / "best.json"))
            b = s["best"] or {}
            pct = pct_scale(df["accuracy"]) if "accuracy" in df.columns else 100.0
            row.update({
                "sampler": _sampler_of(folder) or "-",
                "trials": s["trials"],
                "complete": s["states"].get("COMPLETE", 0),
                "pruned": s["states"].get("PRUNED", 0),
                "failed": s["states"].get("FAIL", 0),
                "best reward": fmt(b.get("reward"), ".4f"),
                "best trial": fmt(b.get("trial"), "d"),
                "accuracy of best (%)": fmt(None if b.get("accuracy") is None else b["accuracy"] * pct, ".2f"),
                "best accuracy (%)": fmt(None if s["best_accuracy"] is None else s["best_accuracy"] * pct, ".2f"),
                "selected (best.json)": _selected_cell(s.get("selected")),
                "time to best": fmt_duration(b.get("seconds_to_best")),
                "trials to best": fmt(b.get("finished_before_best"), "d"),
                "wall time": fmt_duration(s["wall_seconds"]),
            })
        else:
            row.update({"trials": len(df), "best accuracy (%)": fmt(
                df["accuracy"].max() * pct_scale(df["accuracy"]) if _has(df, "accuracy") else None, ".2f")})
        rows.append(row)
    table = pd.DataFrame(rows).fillna("-").astype(str)
    if table["kind"].nunique() == 1:
        table = table.drop(columns="kind")
    common = Path(os.path.commonpath([str(f.resolve()) for f, _, _ in loaded]))
    out_dir = Path(out) if out is not None else common
    doc = Doc()
    doc.heading("Comparison: " + " vs ".join(labels), level=1)
    doc.table(table)
    rep = Report(folder=common, out=out_dir, kinds=[k for _, k, _ in loaded], text="", markdown="")
    trials = [(label, df) for label, (_, kind, df) in zip(labels, loaded) if kind == "trials"]
    if plots and len(trials) >= 1:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ReportError(f"{out_dir}: cannot create the output folder ({first_line(exc)})") from None
        p = plot_comparison(trials, out_dir / "comparison_history.png")
        rep.plots.append(p)
        doc.image(p, out_dir, "best reward so far, all studies")
    doc.md += ["", "Per-study reports: " + ", ".join(
        f"[{label}]({Path(os.path.relpath(_report_dir(folder, out, label) / 'report.md', out_dir)).as_posix()})"
        for label, (folder, _, _) in zip(labels, loaded))]
    rep.text = "\n".join(doc.text).strip("\n") + "\n"
    rep.markdown = re.sub(r"\n{3,}", "\n\n", "\n".join(doc.md).strip("\n")) + "\n"
    if write:
        out_dir.mkdir(parents=True, exist_ok=True)
        rep.markdown_path = write_text(rep.markdown, out_dir / "comparison.md")
    return table, rep


def _report_dir(folder: Path, out: str | os.PathLike | None, label: str) -> Path:
    return folder if out is None else Path(out) / label

