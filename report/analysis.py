"""What a reader wants to know about a results table: the Pareto front, the leaderboard, the
summary of a study and which stage choices matter (PED-ANOVA, from the trials table alone)."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import pandas as pd

from .load import CHOICE_COLUMN, as_choice, load_results

__all__ = ["pareto_front", "leaderboard", "summarize", "param_importances", "ped_anova", "reevaluations",
           "search_mask", "accuracy_follows", "FOLLOWS"]


def search_mask(df: pd.DataFrame) -> np.ndarray:
    """Which rows are the search's own evaluations: not a top-k re-evaluation (``rerank_of``: a
    higher-fidelity protocol, whose scores must not be ranked against proxy scores) and not an
    architecture's second copy (``duplicate_of``: the twin's result, not a measurement)."""
    mask = np.ones(len(df), dtype=bool)
    for col in ("rerank_of", "duplicate_of"):
        if col in df.columns:
            mask &= df[col].isna().to_numpy(dtype=bool)
    return mask


def complete_mask(df: pd.DataFrame) -> np.ndarray:
    """Which rows are COMPLETE search trials (see :func:`search_mask`): all rows of a table
    without a ``state`` column."""
    if "state" not in df.columns:
        return np.ones(len(df), dtype=bool)
    return df["state"].astype("string").eq("COMPLETE").fillna(False).to_numpy(dtype=bool) & search_mask(df)


def complete(df: pd.DataFrame) -> pd.DataFrame:
    """COMPLETE search trials; every row of a table without a ``state`` column (grid, family)."""
    return df if "state" not in df.columns else df[complete_mask(df)]


def reevaluations(df: pd.DataFrame) -> pd.DataFrame:
    """The top-k re-evaluation, one row per candidate (the search trial it re-trains), best mean
    first: ``candidate``, ``proxy_reward`` (the candidate's search score), ``seeds`` (COMPLETE
    re-evaluations), ``reward_mean``, ``reward_sd``, ``accuracy_mean``, ``flops``. Empty when the
    table has none."""
    cols = ["candidate", "proxy_reward", "seeds", "reward_mean", "reward_sd", "accuracy_mean", "flops"]
    if "rerank_of" not in df.columns or "state" not in df.columns:
        return pd.DataFrame(columns=cols)
    done = df[df["rerank_of"].notna() & df["state"].astype("string").eq("COMPLETE").fillna(False)]
    if done.empty:
        return pd.DataFrame(columns=cols)
    groups = done.assign(_reward=_numeric(done["reward"]), _acc=_numeric(done["accuracy"])) \
        .groupby(done["rerank_of"].astype("int64"), sort=False)
    out = pd.DataFrame({"seeds": groups.size(), "reward_mean": groups["_reward"].mean(),
                        "reward_sd": groups["_reward"].std(ddof=1), "accuracy_mean": groups["_acc"].mean()})
    out.index.name = "candidate"
    out = out.reset_index()
    by_number = df.drop_duplicates("number").set_index("number") if "number" in df.columns else None
    for col, src in (("proxy_reward", "reward"), ("flops", "flops")):
        out[col] = [to_float(by_number[src].get(c)) if by_number is not None and src in by_number.columns
                    else None for c in out["candidate"]]
    out = out.sort_values(["reward_mean", "candidate"], ascending=[False, True], kind="stable")
    return out[cols].reset_index(drop=True)


def _numeric(s: pd.Series) -> pd.Series:
    return pd.to_numeric(s, errors="coerce").astype("float64")


# what a trial's accuracy may follow besides the choices themselves: column -> its name in the report
FOLLOWS = {"flops": "FLOPs", "params": "params", "plain_layers": "layers without a shortcut"}


def accuracy_follows(df: pd.DataFrame, min_trials: int = 5) -> pd.Series | None:
    """Spearman's rank correlation between the accuracy of the COMPLETE search trials and each of
    :data:`FOLLOWS` (a column missing or constant is left out). On a short proxy run in a space with
    the skip choice, the count of layers without a shortcut can rank accuracies as well as the proxy
    ranks itself: where it leads, the search's reward follows trainability in few steps more than the
    network's size. None when fewer than ``min_trials`` trials have an accuracy."""
    done = complete(df)
    if "accuracy" not in done.columns:
        return None
    acc = _numeric(done["accuracy"])
    out = {}
    for col, name in FOLLOWS.items():
        if col not in done.columns:
            continue
        x = _numeric(done[col])
        both = acc.notna() & x.notna()
        if int(both.sum()) < min_trials or x[both].nunique() < 2 or acc[both].nunique() < 2:
            continue
        out[name] = float(acc[both].rank().corr(x[both].rank()))  # Spearman: Pearson of the ranks
    if not out:
        return None
    series = pd.Series(out, dtype="float64")
    series.attrs["trials"] = int(acc.notna().sum())
    return series


def pareto_front(df: pd.DataFrame, maximize: str = "accuracy", minimize: str = "flops") -> pd.DataFrame:
    """Rows not dominated in (``maximize`` up, ``minimize`` down), sorted by ``minimize``.

    Only COMPLETE trials (when there is a ``state`` column) with both values count. A row is
    dominated when another is at least as good in both objectives and better in one -- so a row
    equal in one objective and worse in the other is off the front. Exact duplicates (the same
    accuracy and FLOPs twice) dominate neither each other: all copies are on the front. The
    original index is kept so rows can be matched back."""
    for col in (maximize, minimize):
        if col not in df.columns:
            raise ValueError(f"pareto_front: no column {col!r} (columns: {', '.join(map(str, df.columns))})")
    rows = complete(df)
    up, down = _numeric(rows[maximize]), _numeric(rows[minimize])
    ok = up.notna() & down.notna()
    order = pd.DataFrame({"up": up[ok], "down": down[ok]}).sort_values(["down", "up"], ascending=[True, False],
                                                                         kind="stable")
    # Cheapest first: a row is on the front when it beats every cheaper row's accuracy (it sets
    # a new best), or when it is an exact copy of the row that set the current best.
    before = order["up"].cummax().shift(1, fill_value=-math.inf)
    new_best = order["up"] > before
    setter_up = order["up"].where(new_best).ffill()
    setter_down = order["down"].where(new_best).ffill()
    keep = new_best | ((order["up"] == setter_up) & (order["down"] == setter_down))
    return rows.loc[order.index[keep.to_numpy()]]


def best_row(df: pd.DataFrame, key: str = "reward") -> pd.Series | None:
    """The COMPLETE row with the highest ``key`` (ties: lowest trial number), like results.best_trial."""
    if key not in df.columns:
        return None
    done = complete(df)
    done = done[_numeric(done[key]).notna()]
    if done.empty:
        return None
    by = [key, "number"] if "number" in done.columns else [key]
    return done.sort_values(by, ascending=[False, True][:len(by)], kind="stable").iloc[0]


def leaderboard(df: pd.DataFrame, top: int = 10, key: str = "reward") -> pd.DataFrame:
    """The ``top`` COMPLETE trials by ``key`` (descending; ties by trial number), with arch strings.
    A table without a ``key`` column (grid, family: no reward) is ranked by accuracy."""
    col = key if key in df.columns else "accuracy" if "accuracy" in df.columns else None
    if col is None:
        raise ValueError(f"leaderboard: no {key!r} or accuracy column")
    done = complete(df)
    done = done[_numeric(done[col]).notna()]
    by = [col, "number"] if "number" in done.columns else [col]
    return done.sort_values(by, ascending=[False, True][:len(by)], kind="stable").head(top)


def _seconds(td: Any) -> float | None:
    return None if td is None or pd.isna(td) else float(pd.Timedelta(td).total_seconds())


def to_float(v: Any) -> float | None:
    try:
        return None if v is None or pd.isna(v) else float(v)
    except (TypeError, ValueError):
        return None


def summarize(df: pd.DataFrame, best: dict[str, Any] | None = None) -> dict[str, Any]:
    """Trials by state, wall time, compute time, workers, best trial and time to it."""
    states = df["state"].dropna().astype(str).value_counts(sort=False) if "state" in df.columns else pd.Series()
    out: dict[str, Any] = {"trials": len(df),
                           "states": dict(sorted(((str(k), int(v)) for k, v in states.items()), key=lambda kv: -kv[1]))}
    out["reevaluations"] = int(df["rerank_of"].notna().sum()) if "rerank_of" in df.columns else 0
    out["duplicates"] = int(df["duplicate_of"].notna().sum()) if "duplicate_of" in df.columns else 0
    start = df["datetime_start"].min() if "datetime_start" in df.columns else None
    end = df["datetime_complete"].max() if "datetime_complete" in df.columns else None
    out["wall_seconds"] = _seconds(end - start) if start is not None and end is not None \
        and not (pd.isna(start) or pd.isna(end)) else None
    out["compute_seconds"] = float(df["duration_seconds"].sum()) if "duration_seconds" in df.columns else None
    out["workers"] = int(df["worker"].nunique()) if "worker" in df.columns else None
    row = best_row(df)
    out["best"] = None
    if row is not None:
        done_at = row.get("datetime_complete")
        out["best"] = {
            "trial": int(row["number"]) if "number" in row.index and not pd.isna(row["number"]) else None,
            "reward": float(row["reward"]),
            "accuracy": to_float(row.get("accuracy")),
            "flops": to_float(row.get("flops")),
            "params": to_float(row.get("params")),
            "arch": None if pd.isna(row.get("arch", None)) else str(row.get("arch")),
            "seconds_to_best": _seconds(done_at - start) if start is not None and done_at is not None
            and not (pd.isna(done_at) or pd.isna(start)) else None,
        }
        if "number" in df.columns and "datetime_complete" in df.columns and done_at is not None \
                and not pd.isna(done_at):
            out["best"]["finished_before_best"] = int((df["datetime_complete"] <= done_at).sum())
    acc = best_row(df, "accuracy")
    out["best_accuracy"] = to_float(acc["accuracy"]) if acc is not None else None
    if best:
        out["selected"] = {"trial": best.get("trial"), "by": best.get("selected_by")}
        out["target"] = best.get("T")
        out["metric"] = best.get("metric")
        out["w"] = best.get("w")
    return out


# ------------------------------------------------------------------------- parameter importance

_PRIOR = 1.0      # Optuna's PedAnovaImportanceEvaluator: prior weight of its Parzen estimators
_MIN_REGIME = 2   # ... and the fewest trials a choice must be made in to be assessed


def _parzen(counts: np.ndarray) -> np.ndarray:
    """The pdf over K choices of Optuna's categorical Scott-Parzen estimator (PED-ANOVA) fitted
    to ``counts``: one kernel per observed choice (weight = its count, mass 1 on it plus the
    prior spread over all choices) and a uniform prior kernel of weight ``_PRIOR``."""
    k, n, m = len(counts), counts.sum(), np.count_nonzero(counts)
    spread = _PRIOR / (m + 1)
    return (spread * n / (n + _PRIOR) + counts / (n + _PRIOR)) / (k * spread + 1) + _PRIOR / ((n + _PRIOR) * k)


def top_quantile(reward: np.ndarray, quantile: float) -> np.ndarray:
    """Which trials are in the top ``quantile`` by reward: at least ceil(quantile * n), every
    trial tied with the last one included (Optuna's _QuantileFilter)."""
    cut = int(math.ceil(quantile * len(reward))) - 1
    return -reward <= np.partition(-reward, cut)[cut]


def ped_anova(codes: np.ndarray, sizes: list[int], reward: np.ndarray, quantile: float) -> np.ndarray:
    """PED-ANOVA importances, unnormalised, of the columns of ``codes`` (trials x choices; the
    index of the value chosen, -1 where the choice was not made) for reaching the top
    ``quantile`` of ``reward``; NaN for a choice no trial made (it is not reported).

    The same numbers as ``optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile)``
    (``region_quantile=1``, conditional PED-ANOVA) on a study of these trials with one
    ``CategoricalDistribution`` of ``sizes[j]`` values per choice, computed with one bincount per
    choice instead of from a study built trial by trial."""
    n = len(reward)
    top = top_quantile(reward, quantile)
    n_top = int(top.sum())
    out = np.full(codes.shape[1], np.nan)
    for j, k in enumerate(sizes):
        col = codes[:, j]
        made = col >= 0
        n_made = int(made.sum())
        if n_made == 0:
            continue
        out[j] = 0.0
        made_top = made & top
        if k < 2 or n_made < _MIN_REGIME or not made_top.any():
            continue
        p_all = _parzen(np.bincount(col[made], minlength=k)) + 1e-12
        p_top = _parzen(np.bincount(col[made_top], minlength=k)) + 1e-12
        divergence = float(p_all @ ((p_top / p_all - 1) ** 2))  # Pearson divergence of top from all
        alpha, beta = made_top.sum() / n_top, n_made / n  # the top's and everyone's share making the choice
        out[j] = alpha ** 2 / beta * divergence * (n_top / n) ** 2
    return out


def param_importances(results: str | os.PathLike | pd.DataFrame, *, min_trials: int = 3,
                      quantile: float | None = None) -> tuple[pd.Series | None, str]:
    """PED-ANOVA importance of each stage choice for reaching a top reward, from the trials table.

    What is computed (Watanabe et al., IJCAI 2023; conditional form, KDD 2026): among the
    COMPLETE trials with a finite reward, the top ``quantile`` by reward (ties at the cut-off
    included) is compared with all of them. For each choice column ``s<i>_<what>``, the
    distribution of its values among the top trials and among all trials is estimated (counts
    smoothed by a uniform prior, as Optuna's Parzen estimator does) and their Pearson divergence
    measures how differently the top trials chose. A conditional choice (``s1_expand`` exists
    only where ``s1_op`` is ``mbconv``) is assessed within the trials that made it, weighted by
    (share of the top trials making it)^2 / (share of all trials making it). The importances are
    normalised to sum to 1. These are the numbers of ``optuna.importance.PedAnovaImportanceEvaluator``
    on the same trials (the tests check it), computed from the table's category codes in
    milliseconds instead of building an Optuna study trial by trial.

    ``quantile`` defaults to 10%, widened for small studies so the top holds about 4 trials (up
    to 50%). The choices' values are the categories found in the table (a value no trial chose
    is not known to it). ``results`` is a trials frame or a path :func:`load_results` reads.
    Returns ``(importances summing to 1 sorted descending, or None; a note on what was done or why not)``;
    the Series' ``attrs`` hold ``trials``, ``top``, ``quantile`` and ``source``."""
    df = results if isinstance(results, pd.DataFrame) else load_results(results)
    choices = [c for c in df.columns if CHOICE_COLUMN.match(str(c))]
    if "state" in df.columns and "reward" in df.columns:
        reward = _numeric(df["reward"]).to_numpy()
        rows = complete_mask(df) & np.isfinite(reward)
        reward = reward[rows]
    else:
        rows, reward = np.zeros(len(df), dtype=bool), np.array([])
    n = len(reward)
    if n < min_trials:
        return None, f"skipped: {n} complete trial(s) with a reward and search choices, at least {min_trials} needed"
    if not choices:
        return None, "skipped: the trials table has no stage-choice columns (s<i>_<what>)"
    if len(np.unique(reward)) < 2:
        return None, "skipped: every complete trial has the same reward, nothing to explain"
    if quantile is None:
        quantile = min(0.5, max(0.1, 4 / n))
    cats = {c: df[c] if isinstance(df[c].dtype, pd.CategoricalDtype) else as_choice(df[c]) for c in choices}
    codes = np.column_stack([cats[c].cat.codes.to_numpy()[rows] for c in choices])
    raw = ped_anova(codes, [len(cats[c].cat.categories) for c in choices], reward, quantile)
    assessed = ~np.isnan(raw)
    total = raw[assessed].sum()
    if not total > 0:
        return None, "skipped: no choice separates the top trials from the rest"
    imp = pd.Series(raw[assessed] / total, index=[c for c, a in zip(choices, assessed) if a], name="importance",
                    dtype="float64").sort_values(ascending=False, kind="stable")
    top = int(top_quantile(reward, quantile).sum())
    imp.attrs.update(trials=n, top=top, quantile=quantile, source="trials table")
    note = (f"PED-ANOVA over {n} complete trials from the trials table: how differently each choice is "
            f"distributed among the top {top} trials by reward than among all of them; conditional choices "
            f"are assessed where they exist; noisy below ~20 trials")
    return imp, note
