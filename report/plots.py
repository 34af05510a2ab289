"""The report's plots, drawn on matplotlib's Agg canvas without pyplot (a notebook's backend and
figure state are untouched) and written atomically as PNG: best reward so far, accuracy vs FLOPs
with the Pareto front, stage-choice importance, the alpha-beta grid, the model family, and several
studies' histories side by side."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from effnas.io import atomic_write

from .analysis import best_row, complete, pareto_front
from .format import flops_scale, pct_scale
from .load import ReportError

__all__ = ["plot_history", "plot_pareto", "plot_importance", "plot_grid", "plot_grid_scatter", "plot_family",
           "plot_comparison"]


def _figure(width: float = 7.5, height: float = 4.8, ncols: int = 1) -> tuple[Any, Any]:
    """A Figure on the Agg canvas -- no pyplot, so a notebook's backend and state are untouched."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols)
    return fig, axes


def _save(fig: Any, path: Path) -> Path:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    return path


def _label_study(study: str) -> str:
    return study if len(study) <= 40 else study[:37] + "..."


def _reward_label(metric: str | None, w: float | None) -> str:
    cost = {"flops": "FLOPs", "params": "params", "latency": "latency"}.get(metric or "flops", str(metric))
    return f"reward = accuracy × ({cost} / T)$^w$" + ("" if w is None else f", w = {w:g}")


def plot_history(df: pd.DataFrame, path: Path, study: str, metric: str | None = "flops",
                 w: float | None = None) -> Path:
    """Reward of each COMPLETE trial and the best so far against trial number; pruned and failed
    trials (no reward) as ticks along the bottom."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = _figure(7.5, 5.0)
    done = complete(df).dropna(subset=["reward"]).sort_values("number")
    other = df[~df.index.isin(done.index)].sort_values("number")
    ax.plot(done["number"], done["reward"], "o", color="tab:blue", alpha=0.55,
            label=f"complete trial ({len(done)})")
    xs, best = done["number"].tolist(), done["reward"].cummax().tolist()
    if xs and "number" in df.columns and df["number"].max() > xs[-1]:  # carry the best on past the last complete
        xs, best = xs + [int(df["number"].max())], best + best[-1:]
    ax.step(xs, best, where="post", color="tab:red", lw=2, label="best so far")
    if not done.empty:
        i = int(done["reward"].to_numpy().argmax())
        ax.plot(done["number"].iloc[i], done["reward"].iloc[i], "*", ms=16, color="tab:red", mec="k",
                label=f"best: trial {int(done['number'].iloc[i])} ({done['reward'].iloc[i]:.4f})", zorder=5)
    if not other.empty and "state" in other.columns:
        for state, marker, color in (("PRUNED", "|", "tab:gray"), ("FAIL", "x", "tab:orange"),
                                     ("RUNNING", ".", "tab:green")):
            rows = other[other["state"].astype("string").eq(state).fillna(False).astype(bool)]
            if not rows.empty:
                ax.plot(rows["number"], [0.02] * len(rows), marker, ms=12, mew=2, color=color,
                        transform=ax.get_xaxis_transform(), label=f"{state.lower()} ({len(rows)}, no reward)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial number")
    ax.set_ylabel(_reward_label(metric, w))
    ax.set_title(f"{_label_study(study)}: best reward so far")
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncols=3, fontsize=8)
    return _save(fig, path)


def plot_pareto(df: pd.DataFrame, path: Path, study: str, target: float | None) -> Path:
    """Accuracy vs FLOPs of every COMPLETE trial, the Pareto front and the target T."""
    fig, ax = _figure()
    fscale, funit = flops_scale(pd.to_numeric(df["flops"], errors="coerce"))
    pct = pct_scale(df["accuracy"])
    done = complete(df).dropna(subset=["accuracy", "flops"])
    front = pareto_front(df)
    x, y = done["flops"].astype("float64") / fscale, done["accuracy"].astype("float64") * pct
    ax.scatter(x, y, s=28, color="tab:blue", alpha=0.5, label=f"complete trial ({len(done)})")
    stopped = df[df["state"].astype("string").eq("PRUNED").fillna(False).astype(bool)] \
        .dropna(subset=["accuracy", "flops"]) if "state" in df.columns else df.iloc[0:0]
    if not stopped.empty:
        ax.scatter(stopped["flops"].astype("float64") / fscale, stopped["accuracy"].astype("float64") * pct,
                   s=22, facecolors="none", edgecolors="tab:gray",
                   label=f"pruned ({len(stopped)}, accuracy when stopped)")
    fx, fy = front["flops"].astype("float64") / fscale, front["accuracy"].astype("float64") * pct
    ax.step(fx, fy, where="post", color="tab:red", lw=1.5, alpha=0.8)
    ax.scatter(fx, fy, s=60, color="tab:red", edgecolors="k", zorder=4, label=f"Pareto front ({len(front)})")
    labels = [f"#{int(n)}" for n in front["number"]] if "number" in front.columns else []
    best = best_row(df)
    if best is not None and not pd.isna(best.get("accuracy")):
        ax.scatter([best["flops"] / fscale], [best["accuracy"] * pct], marker="*", s=260, color="gold",
                   edgecolors="k", zorder=5, label=f"best reward: trial {int(best['number'])}")
    if target:
        ax.axvline(target / fscale, color="k", ls="--", lw=1, label=f"target T = {target / fscale:.2f} {funit}")
    ax.set_xlabel(f"FLOPs ({funit}, multiply-adds)")
    ax.set_ylabel("minival accuracy (%)")
    ax.set_title(f"{_label_study(study)}: accuracy vs FLOPs")
    _label_points(ax, fig, list(zip(fx, fy)), labels)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def _label_points(ax: Any, fig: Any, points: list[tuple[float, float]], labels: list[str],
                  fontsize: float = 8) -> None:
    """Label points without labels overlapping each other or the points: for each, the first of
    a few offsets (above-left first: nothing on a Pareto front has a point up and to its left)
    whose box is clear, judged in points from the axes size and limits (~0.75 em a character)."""
    if not points:
        return
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    w_in, h_in = ax.get_position().width * fig.get_figwidth(), ax.get_position().height * fig.get_figheight()
    px, py = w_in * 72 / ((x1 - x0) or 1), h_in * 72 / ((y1 - y0) or 1)  # points per data unit
    dots = [((x - x0) * px, (y - y0) * py) for x, y in points]
    placed: list[tuple[float, float, float, float]] = []
    r = 6.0  # marker radius in points

    def clear(box: tuple[float, float, float, float]) -> bool:
        l, b, rr, t = box
        if any(l < cx + r and rr > cx - r and b < cy + r and t > cy - r for cx, cy in dots):
            return False
        return not any(l < q[2] and rr > q[0] and b < q[3] and t > q[1] for q in placed)

    for (cx, cy), (x, y), text in zip(dots, points, labels):
        w, h = 0.75 * fontsize * len(text) + 2, fontsize + 1
        options = [(-6 - w, 5), (6, 5), (6, -5 - h), (-6 - w, -5 - h), (-w / 2, 8), (-w / 2, -8 - h),
                   (-6 - w, 14), (6, -14 - h)]
        dx, dy = next(((dx, dy) for dx, dy in options if clear((cx + dx, cy + dy, cx + dx + w, cy + dy + h))),
                      options[0])
        placed.append((cx + dx, cy + dy, cx + dx + w, cy + dy + h))
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=fontsize,
                    ha="left", va="bottom")


def plot_importance(imp: pd.Series, path: Path, study: str, note_trials: int) -> Path:
    """Stage x choice heat map of the importances (bar chart when names are not ``s<i>_<what>``)."""
    parsed = [re.match(r"^s(\d+)_(\w+)$", str(n)) for n in imp.index]
    if all(parsed):
        stages = sorted({int(m.group(1)) for m in parsed})
        order = ["op", "expand", "kernel", "se", "skip", "filters", "layers"]
        whats = [w for w in order if any(m.group(2) == w for m in parsed)] + \
            sorted({m.group(2) for m in parsed} - set(order))
        grid = pd.DataFrame(0.0, index=whats, columns=stages)
        assessed = pd.DataFrame(False, index=whats, columns=stages)
        for m, v in zip(parsed, imp.to_numpy()):
            grid.loc[m.group(2), int(m.group(1))] = v
            assessed.loc[m.group(2), int(m.group(1))] = True
        fig, ax = _figure(8.0, 4.8)
        img = ax.imshow(grid.to_numpy() * 100, cmap="viridis", aspect="auto", vmin=0)
        for i, w in enumerate(whats):
            for j, s in enumerate(stages):
                v = grid.loc[w, s] * 100
                text = f"{v:.0f}" if assessed.loc[w, s] else "·"
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color=_text_colour(img, v))
        ax.set_xticks(range(len(stages)), [f"stage {s}\nΣ {grid[s].sum() * 100:.0f}%" for s in stages], fontsize=8)
        ax.set_yticks(range(len(whats)), [f"{w}  (Σ {grid.loc[w].sum() * 100:.0f}%)" for w in whats], fontsize=9)
        fig.colorbar(img, ax=ax, label="importance (% of the total)")
        noisy = "; few trials: noisy" if note_trials < 20 else ""
        dot = "; · = not assessed" if not assessed.to_numpy().all() else ""
        ax.set_title(f"{_label_study(study)}: which stage choices matter\n"
                     f"(PED-ANOVA on reward, {note_trials} complete trials{noisy}{dot})", fontsize=10)
    else:
        top = imp.head(20)[::-1]
        fig, ax = _figure(7.5, 0.3 * len(top) + 1.5)
        ax.barh([str(n) for n in top.index], top.to_numpy() * 100, color="tab:blue")
        ax.set_xlabel("importance (% of the total)")
        ax.set_title(f"{_label_study(study)}: which choices matter (PED-ANOVA, {note_trials} trials)", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_grid(df: pd.DataFrame, path: Path, study: str, chosen: dict[str, float] | None) -> tuple[Path, str]:
    """Heat map of accuracy (else the measured FLOPs ratio) over alpha x beta at the best gamma."""
    a, b, g, acc, kind = "alpha", "beta", "gamma", "accuracy", "kind"
    value = acc if df[acc].notna().any() else "flops_ratio"
    if not df[value].notna().any():
        raise ReportError(f"{study}: the grid table has no accuracy and no flops_ratio values")
    rows = df.dropna(subset=[a, b, g, value])
    if rows[kind].astype("string").eq("compound").any():
        # one-axis scalings (depth only, ...) are off the constrained grid: they would stretch the axes
        rows = rows[rows[kind].astype("string").eq("compound").fillna(False).astype(bool)]
    if rows.empty:
        raise ReportError(f"{study}: no grid point has {value} values")
    best = rows.loc[pd.to_numeric(rows[value]).idxmax()] if value == acc else None
    gamma = float(chosen["gamma"]) if chosen and chosen.get("gamma") is not None else \
        float(best[g]) if best is not None else float(rows[g].mode().iloc[0])
    at = rows[(rows[g] - gamma).abs() < 1e-9]
    if at.empty:  # the chosen gamma is not a grid value: use the nearest one
        gamma = float(rows.loc[(rows[g] - gamma).abs().idxmin(), g])
        at = rows[(rows[g] - gamma).abs() < 1e-9]
    pct = pct_scale(df[acc]) if value == acc else 1.0
    table = at.pivot_table(index=b, columns=a, values=value, aggfunc="max") * pct
    fig, ax = _figure(7.5, 5.2)
    img = ax.imshow(table.to_numpy(dtype="float64"), origin="lower", cmap="viridis", aspect="auto")
    chars = 4  # "79.9" or "1.94"
    cell_pt = 0.8 * 7.5 * 72 / max(1, table.shape[1])  # the axes take ~80% of the figure's width
    fontsize = min(8.0, (cell_pt - 3) / (0.65 * chars))
    if fontsize >= 5:  # smaller would be unreadable: the colour bar says it then
        for i in range(table.shape[0]):
            for j in range(table.shape[1]):
                v = table.iat[i, j]
                if not pd.isna(v):
                    ax.text(j, i, f"{v:.1f}" if value == acc else f"{v:.2f}", ha="center", va="center",
                            fontsize=fontsize, color=_text_colour(img, v))
    ax.set_xticks(range(table.shape[1]), [f"{v:.2f}" for v in table.columns], rotation=45 if table.shape[1] > 8 else 0)
    ax.set_yticks(range(table.shape[0]), [f"{v:.2f}" for v in table.index])
    ax.set_xlabel("α (depth coefficient)")
    ax.set_ylabel("β (width coefficient)")
    label = "minival accuracy (%)" if value == acc else "measured FLOPs ratio (× B0)"
    fig.colorbar(img, ax=ax, label=label)
    if chosen and chosen.get("alpha") is not None and chosen.get("beta") is not None:
        cols, idx = list(table.columns), list(table.index)
        ca = min(range(len(cols)), key=lambda k: abs(cols[k] - float(chosen["alpha"])))
        cb = min(range(len(idx)), key=lambda k: abs(idx[k] - float(chosen["beta"])))
        if abs(cols[ca] - float(chosen["alpha"])) < 1e-6 and abs(idx[cb] - float(chosen["beta"])) < 1e-6:
            ax.add_patch(_rect(ca, cb))
            ax.plot([], [], "s", mfc="none", mec="red", mew=2, ms=10, label="chosen (α, β, γ)")
            ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"{_label_study(study)}: {label.split(' (')[0]} on the α–β grid at γ = {gamma:.2f}\n"
                 f"(blank: not on the grid |α·β²·γ² − 2| ≤ tol)", fontsize=10)
    return _save(fig, path), f"γ = {gamma:.2f}, colour = {label}"


def _text_colour(img: Any, value: float) -> str:
    """Black on light cells, white on dark ones (viridis is light at the top)."""
    r, g, b, _ = img.cmap(img.norm(value))
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def _rect(j: int, i: int) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=2.5)


def plot_grid_scatter(df: pd.DataFrame, path: Path, study: str) -> Path | None:
    """Accuracy vs measured FLOPs ratio, one colour per scaling kind (compound/depth/width/resolution)."""
    acc, ratio, kind = "accuracy", "flops_ratio", "kind"
    if not (df[acc].notna() & df[ratio].notna()).any():
        return None
    fig, ax = _figure()
    pct = pct_scale(df[acc])
    groups = df.groupby(df[kind].astype("string").fillna("?"), sort=True) if df[kind].notna().any() \
        else [("grid", df)]
    markers = iter("osD^vP*X" * 4)
    for name, rows in groups:
        rows = rows.dropna(subset=[acc, ratio])
        compound = str(name) == "compound"
        ax.scatter(rows[ratio].astype("float64"), rows[acc].astype("float64") * pct, s=24 if compound else 60,
                   alpha=0.5 if compound else 0.9, marker=next(markers), edgecolors="k", linewidths=0.4,
                   label=f"{name} ({len(rows)})", zorder=2 if compound else 3)
    ax.set_xlabel("measured FLOPs ratio (× B0)")
    ax.set_ylabel("minival accuracy (%)")
    ax.set_title(f"{_label_study(study)}: scaling one dimension vs compound scaling")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="scaling", title_fontsize=8)
    return _save(fig, path)


def plot_family(df: pd.DataFrame, path: Path, study: str) -> Path:
    """FLOPs and params of B0..Bn against phi (log scale) with 2^phi x B0 for reference."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    phi, name, flops, params = "phi", "name", "flops", "params"
    rows = df.sort_values(phi)
    x = rows[phi].astype("float64").to_numpy()
    fig, axes = _figure(11.0, 4.6, ncols=2)
    for ax, col, what in ((axes[0], flops, "FLOPs"), (axes[1], params, "params")):
        if rows[col].isna().all():
            ax.text(0.5, 0.5, f"no {what} column", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        y = rows[col].astype("float64").to_numpy()
        if what == "FLOPs":
            scale, unit = flops_scale(y)
            ylabel = f"FLOPs ({unit}, multiply-adds; log scale)"
        else:
            scale, unit = (1e6, "M")
            ylabel = "parameters (millions; log scale)"
        ax.plot(x, y / scale, "o-", color="tab:blue", lw=2, label=f"family {what}")
        base = y[x == x.min()][0] / scale if (x == x.min()).any() else y[0] / scale
        ref = base * 2.0 ** (x - x.min())
        ax.plot(x, ref, "--", color="tab:gray", label=f"$2^{{\\varphi}}$ × {what} of B{int(x.min())}")
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))  # 1-2-5 steps, not only decades
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("compound coefficient φ")
        ax.set_ylabel(ylabel)
        ax.set_xticks(x)
        if rows[name].notna().any():
            ax.set_xticks(x, [f"{int(p) if float(p).is_integer() else p}\n{n}" for p, n in zip(x, rows[name])],
                          fontsize=8)
        for xv, yv in zip(x, y / scale):  # below-right: the curves rise to the right, that corner is free
            ax.annotate(f"{yv:.3g}", (xv, yv), textcoords="offset points", xytext=(5, -11), fontsize=7,
                        ha="left")
        ax.margins(x=0.08)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="upper left")
        ax.set_title(f"{what} vs φ")
    fig.suptitle(f"{_label_study(study)}: model family (compound scaling aims at FLOPs = $2^{{\\varphi}}$ × B0)",
                 fontsize=11)
    return _save(fig, path)


def plot_comparison(studies: list[tuple[str, pd.DataFrame]], path: Path) -> Path:
    """Best reward so far vs trial for several studies on one axis (e.g. TPE vs random)."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = _figure()
    for label, df in studies:
        if "reward" not in df.columns:
            continue
        done = complete(df).dropna(subset=["reward"]).sort_values("number")
        if done.empty:
            continue
        line, = ax.step(done["number"], done["reward"].cummax(), where="post", lw=2,
                        label=f"{label} (best {done['reward'].max():.4f})")
        ax.plot(done["number"], done["reward"], "o", color=line.get_color(), alpha=0.35, ms=4)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial number")
    ax.set_ylabel(_reward_label(None, None))
    ax.set_title("best reward so far (lines) and each complete trial (dots)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)
