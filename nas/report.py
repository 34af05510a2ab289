"""``nas-report``: read any results folder, print and plot what a reader needs, write ``report.md``.

Results folders hold one table each stage writes (Parquet + CSV of the same frame):

* ``trials``  -- ``nas-search``: one row per trial, :data:`nas.results.TRIAL_COLUMNS` then one
  column per stage choice ``s<i>_<what>``; ``best.json``, ``study.journal`` beside it;
* ``grid``    -- ``scale-search``: one row per (alpha, beta, gamma) point; ``coefficients.yaml``;
* ``family``  -- ``scale-family``: one row per model B0..Bn.

:func:`load_results` gives the same frame from either file format, so notebooks can use it on
whatever survived a copy. Column names of the stage-2 tables are looked up through aliases
(:data:`ALIASES`), so ``acc`` or ``measured_ratio`` are understood as well as ``accuracy`` and
``flops_ratio``. FLOPs are multiply-adds (the paper's convention), shown as MFLOPs or GFLOPs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from .results import TRIAL_COLUMNS, _atomic_write, write_text

__all__ = ["ReportError", "KINDS", "ALIASES", "load_results", "find_results", "pareto_front",
           "leaderboard", "summarize", "param_importances", "Report", "make_report", "compare",
           "main"]

KINDS = ("trials", "grid", "family")  # the order load_results looks for them in a folder
FORMATS = (".parquet", ".csv")
CHOICE_COLUMN = re.compile(r"^s\d+_\w+$")  # a stage choice of the MnasNet space, e.g. s3_kernel

# Column name -> accepted spellings (compared case-insensitively without punctuation).
ALIASES: dict[str, tuple[str, ...]] = {
    "accuracy": ("accuracy", "acc", "minival_accuracy", "val_accuracy", "top1", "test_accuracy"),
    "flops": ("flops", "flops_macs", "macs", "madds", "multiply_adds"),
    "params": ("params", "n_params", "num_params", "parameters"),
    "reward": ("reward",),
    "alpha": ("alpha", "α", "depth_coefficient", "depth_coef"),
    "beta": ("beta", "β", "width_coefficient", "width_coef"),
    "gamma": ("gamma", "γ", "resolution_coefficient", "resolution_coef"),
    "product": ("product", "abg2", "alpha_beta2_gamma2", "constraint", "flops_factor"),
    "flops_ratio": ("flops_ratio", "measured_ratio", "measured_flops_ratio", "ratio", "flops_vs_b0"),
    "resolution": ("resolution", "res", "image_size", "img_size"),
    "kind": ("kind", "scaling", "type", "axis"),
    "phi": ("phi", "φ", "compound_coefficient", "compound_coef"),
    "name": ("name", "model", "model_name"),
    "depth": ("depth", "depth_multiplier", "depth_mult", "depth_coefficient", "d"),
    "width": ("width", "width_multiplier", "width_mult", "width_coefficient", "w"),
    "dropout": ("dropout", "dropout_rate"),
    "ratio_vs_2phi": ("ratio_vs_2phi", "vs_2phi", "ratio_to_2phi", "flops_ratio_vs_2phi"),
    "arch": ("arch", "spec", "block_string", "arch_string"),
}


class ReportError(ValueError):
    """A results path that cannot be read: missing, empty, corrupt or of an unknown kind."""


# ------------------------------------------------------------------------------------ loading


def _norm(name: str) -> str:
    return re.sub(r"[^0-9a-zα-ω]", "", str(name).lower())


def _col(df: pd.DataFrame, key: str) -> str | None:
    """The frame's column for ``key`` (see :data:`ALIASES`), or None."""
    wanted = [_norm(a) for a in ALIASES.get(key, (key,))]
    by_norm = {_norm(c): c for c in df.columns}
    for w in wanted:
        if w in by_norm:
            return by_norm[w]
    return None


def find_results(folder: str | os.PathLike) -> dict[str, Path]:
    """``{kind: file}`` of the results tables in ``folder`` (Parquet preferred over CSV)."""
    folder = Path(folder)
    found = {}
    for kind in KINDS:
        for ext in FORMATS:
            if (folder / f"{kind}{ext}").is_file():
                found[kind] = folder / f"{kind}{ext}"
                break
    return found


def _kind_of(path: Path, df: pd.DataFrame) -> str:
    if path.stem in KINDS:
        return path.stem
    if "state" in df.columns and "number" in df.columns:
        return "trials"
    if all(_col(df, k) for k in ("alpha", "beta", "gamma")):
        return "grid"
    if _col(df, "phi"):
        return "family"
    raise ReportError(f"{path}: not a trials, grid or family table (columns: {', '.join(map(str, df.columns))})")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


_INT = re.compile(r"^[+-]?\d+$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$")
_BOOL = {"True": True, "False": False, "true": True, "false": False}


def _as_datetime(s: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(s):
        out = s
    else:
        text = s.astype("object").where(s.notna(), None)
        utc = any(isinstance(v, str) and re.search(r"(Z|[+-]\d{2}:?\d{2})$", v) for v in text)
        out = pd.to_datetime(text, format="ISO8601", utc=utc)
    if getattr(out.dt, "tz", None) is not None:
        return out.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    return out.astype("datetime64[us]")


def _integer(s: pd.Series) -> pd.Series:
    return s.astype("int64") if not s.isna().any() else s.astype("Int64")


def _infer(s: pd.Series) -> pd.Series:
    """One dtype from the values alone, so a Parquet column and its CSV text end up alike:
    integers -> int64 (Int64 with gaps), other numbers -> float64, True/False -> boolean,
    ISO timestamps -> datetime64[us], anything else -> string; an all-empty column -> float64."""
    if pd.api.types.is_datetime64_any_dtype(s):
        return _as_datetime(s)
    if pd.api.types.is_bool_dtype(s):
        return s.astype("boolean")
    if pd.api.types.is_integer_dtype(s):
        return _integer(s)
    if pd.api.types.is_float_dtype(s):
        return s.astype("float64")
    values = s.dropna()
    if values.empty:
        return s.astype("float64")
    text = values.astype(str)
    if text.map(lambda v: bool(_INT.match(v))).all():
        return _integer(pd.to_numeric(s))
    numbers = pd.to_numeric(text, errors="coerce")
    if numbers.notna().all():
        return pd.to_numeric(s, errors="coerce").astype("float64")
    if text.isin(list(_BOOL)).all():
        return s.map(lambda v: _BOOL.get(str(v)) if pd.notna(v) else pd.NA).astype("boolean")
    if text.map(lambda v: bool(_DATETIME.match(v))).all():
        return _as_datetime(s)
    return s.astype("string")


def _as_choice(s: pd.Series) -> pd.Series:
    """A stage choice as a categorical whose categories are the sorted values: integers when every
    value is whole (an expand ratio of 6, even if stored as 6.0), else floats, else strings."""
    base = _infer(s)
    if pd.api.types.is_numeric_dtype(base) and not pd.api.types.is_bool_dtype(base):
        present = base.dropna().astype("float64")
        whole = bool((present == present.round()).all())
        values = [None if pd.isna(v) else (int(v) if whole else float(v)) for v in base.astype("object")]
    else:
        values = [None if pd.isna(v) else str(v) for v in base.astype("object")]
    categories = pd.Index(sorted({v for v in values if v is not None}))
    return pd.Series(pd.Categorical(values, categories=categories), index=s.index, name=s.name)


def _coerce(s: pd.Series, dtype: str) -> pd.Series:
    if dtype.startswith("datetime64"):
        return _as_datetime(s)
    if dtype in ("int64", "Int64", "float64"):
        numbers = pd.to_numeric(s) if not pd.api.types.is_numeric_dtype(s) else s
        return numbers.astype(dtype)
    if dtype == "string":
        return s.astype("string")
    return s.astype(dtype)


def _normalize(df: pd.DataFrame, kind: str, path: Path) -> pd.DataFrame:
    out = {}
    for col in df.columns:
        s = df[col]
        try:
            if kind == "trials" and col in TRIAL_COLUMNS:
                out[col] = _coerce(s, TRIAL_COLUMNS[col])
            elif kind == "trials" and CHOICE_COLUMN.match(str(col)):
                out[col] = _as_choice(s)
            else:
                out[col] = _infer(s)
        except (ValueError, TypeError, OverflowError) as exc:
            want = TRIAL_COLUMNS.get(col, "a consistent type") if kind == "trials" else "a consistent type"
            raise ReportError(f"{path}: column {col!r} does not hold {want} values ({_first_line(exc)})") \
                from None
    return pd.DataFrame(out, index=pd.RangeIndex(len(df)))


def _read_table(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        try:
            with open(path, "rb") as f:  # one open: a concurrent atomic replace cannot tear the read
                return pd.read_parquet(f)
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for a corrupt file
            raise ReportError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None
    if path.suffix == ".csv":
        try:
            # Everything as text: the dtypes are decided once, for both formats, by _normalize.
            # A row longer than the header is an error (not silently an index, nor truncated).
            with warnings.catch_warnings():
                warnings.simplefilter("error", pd.errors.ParserWarning)
                return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], index_col=False)
        except pd.errors.EmptyDataError:
            raise ReportError(f"{path}: empty CSV file (no header)") from None
        except (pd.errors.ParserError, pd.errors.ParserWarning, UnicodeDecodeError, ValueError) as exc:
            raise ReportError(f"{path}: not a readable CSV file ({_first_line(exc)})") from None
    raise ReportError(f"{path}: unknown results file type {path.suffix!r} (expected .parquet or .csv)")


def _load(path: Path) -> tuple[str, pd.DataFrame]:
    raw = _read_table(path)
    if len(raw.columns) == 0:
        raise ReportError(f"{path}: the table has no columns")
    kind = _kind_of(path, raw)
    if kind == "trials":
        missing = [c for c in ("number", "state") if c not in raw.columns]
        if missing:
            raise ReportError(f"{path}: a trials table needs the column(s) {', '.join(missing)}")
    return kind, _normalize(raw, kind, path)


def _results_file(path: Path) -> Path:
    if not path.exists():
        raise ReportError(f"{path}: no such file or folder")
    if path.is_file():
        return path
    found = find_results(path)
    if not found:
        nested = sorted(p.name for p in path.iterdir() if p.is_dir() and find_results(p))
        hint = f"; study folders inside: {', '.join(nested)}" if nested else ""
        raise ReportError(f"{path}: no results files (trials, grid or family .parquet/.csv){hint}")
    return found[next(k for k in KINDS if k in found)]


def load_results(path: str | os.PathLike) -> pd.DataFrame:
    """The results table of a study folder (``trials``, else ``grid``, else ``family``) or of one
    ``.parquet``/``.csv`` file, with the same columns and dtypes from either format:
    :data:`~nas.results.TRIAL_COLUMNS` dtypes for trials, datetimes parsed, stage choices
    ``s<i>_<what>`` as categoricals with sorted categories, other columns typed by their values.
    The kind is in ``df.attrs["kind"]``. Raises :class:`ReportError` (a ``ValueError``)."""
    file = _results_file(Path(path))
    kind, df = _load(file)
    df.attrs.update(kind=kind, source=str(file))
    return df


# ----------------------------------------------------------------------------------- analysis


def _complete(df: pd.DataFrame) -> pd.DataFrame:
    """COMPLETE trials; every row of a table without a ``state`` column (grid, family)."""
    if "state" not in df.columns:
        return df
    return df[df["state"].astype("string").eq("COMPLETE").fillna(False).astype(bool)]


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
    rows = _complete(df)
    up = pd.to_numeric(rows[maximize], errors="coerce").astype("float64")
    down = pd.to_numeric(rows[minimize], errors="coerce").astype("float64")
    ok = up.notna() & down.notna()
    order = pd.DataFrame({"up": up[ok], "down": down[ok]}).sort_values(["down", "up"], ascending=[True, False],
                                                                         kind="stable")
    keep, best_up, best_down = [], -math.inf, math.nan
    for idx, u, d in zip(order.index, order["up"], order["down"]):
        if u > best_up:  # cheapest row reaching this accuracy (or the first of its duplicates)
            keep.append(idx)
            best_up, best_down = u, d
        elif u == best_up and d == best_down:  # an exact duplicate of a front point
            keep.append(idx)
    return rows.loc[keep]


def _best_row(df: pd.DataFrame, key: str = "reward") -> pd.Series | None:
    """The COMPLETE row with the highest ``key`` (ties: lowest trial number), like results.best_trial."""
    col = _col(df, key)
    if col is None:
        return None
    done = _complete(df)
    values = pd.to_numeric(done[col], errors="coerce")
    done = done[values.notna()]
    if done.empty:
        return None
    by = [col, "number"] if "number" in done.columns else [col]
    return done.sort_values(by, ascending=[False, True][:len(by)], kind="stable").iloc[0]


def leaderboard(df: pd.DataFrame, top: int = 10, key: str = "reward") -> pd.DataFrame:
    """The ``top`` COMPLETE trials by ``key`` (descending; ties by trial number), with arch strings."""
    col = _col(df, key) or _col(df, "accuracy")
    if col is None:
        raise ValueError(f"leaderboard: no {key!r} or accuracy column")
    done = _complete(df)
    done = done[pd.to_numeric(done[col], errors="coerce").notna()]
    by = [col, "number"] if "number" in done.columns else [col]
    return done.sort_values(by, ascending=[False, True][:len(by)], kind="stable").head(top)


def _seconds(td: Any) -> float | None:
    return None if td is None or pd.isna(td) else float(pd.Timedelta(td).total_seconds())


def summarize(df: pd.DataFrame, best: dict[str, Any] | None = None) -> dict[str, Any]:
    """Trials by state, wall time, compute time, workers, best trial and time to it."""
    states = Counter(str(s) for s in df["state"].dropna()) if "state" in df.columns else Counter()
    out: dict[str, Any] = {"trials": len(df), "states": dict(sorted(states.items(), key=lambda kv: -kv[1]))}
    start = df["datetime_start"].min() if "datetime_start" in df.columns else None
    end = df["datetime_complete"].max() if "datetime_complete" in df.columns else None
    out["wall_seconds"] = _seconds(end - start) if start is not None and end is not None \
        and not (pd.isna(start) or pd.isna(end)) else None
    out["compute_seconds"] = float(df["duration_seconds"].sum()) if "duration_seconds" in df.columns else None
    out["workers"] = int(df["worker"].nunique()) if "worker" in df.columns else None
    row = _best_row(df)
    out["best"] = None
    if row is not None:
        done_at = row.get("datetime_complete")
        out["best"] = {
            "trial": int(row["number"]) if "number" in row.index else None,
            "reward": float(row["reward"]),
            "accuracy": _float(row.get("accuracy")),
            "flops": _float(row.get("flops")),
            "params": _float(row.get("params")),
            "arch": None if pd.isna(row.get("arch", None)) else str(row.get("arch")),
            "seconds_to_best": _seconds(done_at - start) if start is not None and done_at is not None
            and not (pd.isna(done_at) or pd.isna(start)) else None,
        }
        if "number" in df.columns and "datetime_complete" in df.columns and done_at is not None \
                and not pd.isna(done_at):
            out["best"]["finished_before_best"] = int((df["datetime_complete"] <= done_at).sum())
    acc = _best_row(df, "accuracy")
    out["best_accuracy"] = _float(acc[_col(df, "accuracy")]) if acc is not None else None
    if best:
        out["target"] = best.get("T")
        out["metric"] = best.get("metric")
        out["w"] = best.get("w")
    return out


def _float(v: Any) -> float | None:
    try:
        return None if v is None or pd.isna(v) else float(v)
    except (TypeError, ValueError):
        return None


# ------------------------------------------------------------------------- parameter importance


def _study_from_journal(folder: Path, name: str | None) -> Any | None:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = folder / "study.journal"
    if not journal.is_file():
        return None
    try:
        storage = JournalStorage(JournalFileBackend(str(journal)))
        names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
        if not names:
            return None
        pick = name if name in names else folder.name if folder.name in names else names[0]
        return optuna.load_study(study_name=pick, storage=storage)
    except Exception:  # unreadable or locked journal: the trials table is the fallback
        return None


def _trials_from_table(df: pd.DataFrame) -> list[tuple[dict[str, Any], dict[str, Any], float]]:
    import optuna

    choices = [c for c in df.columns if CHOICE_COLUMN.match(str(c))]
    rows = []
    done = _complete(df)
    for _, row in done.iterrows():
        if pd.isna(row.get("reward")):
            continue
        params, dists = {}, {}
        for c in choices:
            value = row[c]
            if pd.isna(value):
                continue
            cats = list(df[c].cat.categories) if isinstance(df[c].dtype, pd.CategoricalDtype) \
                else sorted(df[c].dropna().unique().tolist())
            params[c] = value.item() if hasattr(value, "item") else value
            dists[c] = optuna.distributions.CategoricalDistribution([v.item() if hasattr(v, "item") else v
                                                                     for v in cats])
        rows.append((params, dists, float(row["reward"])))
    return rows


def param_importances(results: str | os.PathLike | pd.DataFrame, *, folder: str | os.PathLike | None = None,
                      min_trials: int = 3) -> tuple[pd.Series | None, str]:
    """PED-ANOVA importance of each search choice for reaching a top reward (COMPLETE trials).

    The study is read from the folder's ``study.journal`` when there is one (the source of truth),
    else rebuilt from the trials table with ``optuna.trial.create_trial`` (each choice column's
    categories as its ``CategoricalDistribution``). Conditional choices (``s1_expand`` exists only
    when ``s1_op`` is ``mbconv``) are handled by Optuna's conditional PED-ANOVA, which assesses a
    choice within the trials that made it. The top quantile is widened for small studies so it
    holds about 4 trials (10% from 40 complete trials on). ``results`` is a study folder or a
    trials frame (then ``folder`` may name the folder whose journal to read).
    Returns ``(importances summing to 1, or None; a note on what was done or why not)``."""
    import optuna

    if isinstance(results, pd.DataFrame):
        df = results
        folder = Path(folder) if folder is not None else None
    else:
        df = load_results(results)
        folder = Path(results) if Path(results).is_dir() else Path(results).parent
    rows: list[tuple[dict[str, Any], dict[str, Any], float]] = []
    study = _study_from_journal(folder, _study_name(folder)) if folder is not None else None
    source = "study.journal"
    if study is not None:
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            reward = t.user_attrs.get("reward", t.value if len(t.values or []) == 1 else None)
            if reward is not None and t.params:
                rows.append((dict(t.params), dict(t.distributions), float(reward)))
    if not rows and "state" in df.columns:
        rows, source = _trials_from_table(df), "trials table"
    if len(rows) < min_trials:
        return None, f"skipped: {len(rows)} complete trial(s) with a reward and search choices, " \
                     f"at least {min_trials} needed"
    if len({r for _, _, r in rows}) < 2:
        return None, "skipped: every complete trial has the same reward, nothing to explain"
    quantile = min(0.5, max(0.1, 4 / len(rows)))
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        holder = optuna.create_study(direction="maximize")
        holder.add_trials([optuna.trial.create_trial(params=p, distributions=d, value=r) for p, d, r in rows])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = optuna.importance.get_param_importances(
                holder, evaluator=optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile))
    except Exception as exc:  # a degenerate study must not stop the report
        return None, f"skipped: the importance evaluator failed ({_first_line(exc)})"
    finally:
        optuna.logging.set_verbosity(verbosity)
    if not result or not any(v > 0 for v in result.values()):
        return None, "skipped: no choice separates the top trials from the rest"
    top = math.ceil(quantile * len(rows))
    note = (f"PED-ANOVA (optuna.importance.PedAnovaImportanceEvaluator) over {len(rows)} complete trials from "
            f"the {source}: how differently each choice is distributed among the top {top} trials by "
            f"reward than among all of them; conditional choices are assessed where they exist; "
            f"noisy below ~20 trials")
    imp = pd.Series(result, name="importance", dtype="float64").sort_values(ascending=False)
    imp.attrs.update(trials=len(rows), source=source)
    return imp, note


# ------------------------------------------------------------------------------------- format


def _flops_scale(values: Iterable[float]) -> tuple[float, str]:
    vals = [v for v in values if v is not None and not pd.isna(v)]
    return (1e9, "GFLOPs") if vals and max(vals) >= 1e9 else (1e6, "MFLOPs")


def _pct_scale(values: pd.Series) -> float:
    """Accuracy is stored as a fraction; a table already in percent is left as is."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    return 1.0 if not v.empty and v.max() > 1.0 else 100.0


def _fmt(v: Any, spec: str) -> str:
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return "-"
    return format(v, spec)


def _fmt_duration(s: float | None) -> str:
    if s is None or pd.isna(s):
        return "-"
    s = float(s)
    if s < 60:
        return f"{s:.1f}s"
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _trial_table(rows: pd.DataFrame, df: pd.DataFrame, arch: bool = True) -> pd.DataFrame:
    """Display frame (strings) of trial rows: trial, reward, accuracy %, FLOPs, params, ..."""
    fscale, funit = _flops_scale(pd.to_numeric(df["flops"], errors="coerce")) if "flops" in df.columns \
        else (1e6, "MFLOPs")
    pct = _pct_scale(df["accuracy"]) if "accuracy" in df.columns else 100.0
    out = pd.DataFrame(index=rows.index)
    if "number" in rows.columns:
        out["trial"] = rows["number"].map(lambda v: _fmt(v, "d"))
    if "reward" in rows.columns:
        out["reward"] = rows["reward"].map(lambda v: _fmt(v, ".4f"))
    if "accuracy" in rows.columns:
        out["accuracy (%)"] = rows["accuracy"].map(lambda v: _fmt(None if pd.isna(v) else v * pct, ".2f"))
    if "flops" in rows.columns:
        out[funit] = rows["flops"].map(lambda v: _fmt(None if pd.isna(v) else v / fscale, ".2f"))
    if "params" in rows.columns:
        out["params (M)"] = rows["params"].map(lambda v: _fmt(None if pd.isna(v) else v / 1e6, ".3f"))
    if "epochs" in rows.columns:
        out["epochs"] = rows["epochs"].map(lambda v: _fmt(v, "d"))
    if "duration_seconds" in rows.columns:
        out["time"] = rows["duration_seconds"].map(_fmt_duration)
    if arch and "arch" in rows.columns:
        out["arch"] = rows["arch"].map(lambda v: "-" if pd.isna(v) else str(v))
    return out.reset_index(drop=True)


def _generic_table(df: pd.DataFrame, spec: dict[str, tuple[str, str, float]]) -> pd.DataFrame:
    """Display frame of the columns named in ``spec`` (key -> (heading, format, divisor)) that the
    frame has (found through :data:`ALIASES`), followed by any other column as it is."""
    out = pd.DataFrame(index=df.index)
    used = set()
    for key, (heading, fmt, div) in spec.items():
        col = _col(df, key)
        if col is None or col in used:
            continue
        used.add(col)
        s = df[col]
        if fmt and pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            out[heading] = s.map(lambda v, f=fmt, d=div: _fmt(None if pd.isna(v) else v / d, f))
        else:
            out[heading] = s.map(lambda v: "-" if pd.isna(v) else str(v))
    for col in df.columns:
        if col not in used and col != "arch" and _col(df[[col]], "arch") is None:
            s = df[col]
            out[str(col)] = s.map(lambda v: "-" if pd.isna(v) else (f"{v:.4g}" if isinstance(v, float) else str(v)))
    return out.reset_index(drop=True)


def _md(df: pd.DataFrame) -> str:
    if df.empty:
        return "_(none)_"
    safe = df.copy()
    for c in safe.columns:  # a | inside a cell would break the Markdown table
        safe[c] = safe[c].astype(str).str.replace("|", "\\|", regex=False)
    if "arch" in safe.columns:
        safe["arch"] = safe["arch"].map(lambda v: f"`{v}`" if v != "-" else v)
    text_cols = {"arch", "kind", "study", "sampler", "model", "name", "state", "reason"}
    align = ["left" if c in text_cols or not safe[c].str.match(r"^[-+]?[\d.]+(e[-+]?\d+)?[a-z]*$|^-$").all()
             else "right" for c in safe.columns]
    return safe.to_markdown(index=False, disable_numparse=True, colalign=align)


def _txt(df: pd.DataFrame) -> str:
    return "  (none)" if df.empty else df.to_string(index=False)


# --------------------------------------------------------------------------------------- plots


def _figure(width: float = 7.5, height: float = 4.8, ncols: int = 1) -> tuple[Any, Any]:
    """A Figure on the Agg canvas -- no pyplot, so a notebook's backend and state are untouched."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols)
    return fig, axes


def _save(fig: Any, path: Path) -> Path:
    _atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
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
    done = _complete(df).dropna(subset=["reward"]).sort_values("number")
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
    fscale, funit = _flops_scale(pd.to_numeric(df["flops"], errors="coerce"))
    pct = _pct_scale(df["accuracy"])
    done = _complete(df).dropna(subset=["accuracy", "flops"])
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
    best = _best_row(df)
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
    a, b, g = _col(df, "alpha"), _col(df, "beta"), _col(df, "gamma")
    acc = _col(df, "accuracy")
    value = acc if acc is not None and df[acc].notna().any() else _col(df, "flops_ratio")
    if value is None:
        raise ReportError(f"{study}: the grid table has neither accuracy nor flops_ratio")
    rows = df.dropna(subset=[a, b, g, value])
    kind = _col(df, "kind")
    if kind is not None and rows[kind].astype("string").eq("compound").any():
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
    pct = _pct_scale(df[acc]) if value == acc else 1.0
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
    acc, ratio, kind = _col(df, "accuracy"), _col(df, "flops_ratio"), _col(df, "kind")
    if acc is None or ratio is None or not df[acc].notna().any():
        return None
    fig, ax = _figure()
    pct = _pct_scale(df[acc])
    groups = df.groupby(df[kind].astype("string").fillna("?"), sort=True) if kind else [("grid", df)]
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

    phi, name = _col(df, "phi"), _col(df, "name")
    flops, params = _col(df, "flops"), _col(df, "params")
    rows = df.sort_values(phi)
    x = rows[phi].astype("float64").to_numpy()
    fig, axes = _figure(11.0, 4.6, ncols=2)
    for ax, col, what in ((axes[0], flops, "FLOPs"), (axes[1], params, "params")):
        if col is None or rows[col].isna().all():
            ax.text(0.5, 0.5, f"no {what} column", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        y = rows[col].astype("float64").to_numpy()
        if what == "FLOPs":
            scale, unit = _flops_scale(y)
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
        if name is not None:
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
        done = _complete(df).dropna(subset=["reward"]).sort_values("number")
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


# -------------------------------------------------------------------------------------- report


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
        raise ReportError(f"{path}: not readable JSON ({_first_line(exc)})") from None
    return data if isinstance(data, dict) else None


def _read_yaml(path: Path) -> dict[str, Any] | None:
    import yaml

    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ReportError(f"{path}: not readable YAML ({_first_line(exc)})") from None
    return data if isinstance(data, dict) else None


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


class _Doc:
    """Console text and Markdown built side by side."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.md: list[str] = []

    def heading(self, title: str, level: int = 2) -> None:
        self.text += ["", title, "-" * len(title)] if level > 1 else ["=" * len(title), title, "=" * len(title)]
        self.md += ["", "#" * level + " " + title, ""]

    def line(self, text: str, md: str | None = None) -> None:
        self.text.append(text)
        self.md.append(text if md is None else md)

    def table(self, df: pd.DataFrame, text_df: pd.DataFrame | None = None) -> None:
        self.text.append(_txt(df if text_df is None else text_df))
        self.md += ["", _md(df), ""]

    def image(self, path: Path, relative_to: Path, alt: str) -> None:
        rel = os.path.relpath(path, relative_to)
        self.text.append(f"  plot: {path}")
        self.md += ["", f"![{alt}]({Path(rel).as_posix()})", ""]

    def note(self, text: str) -> None:
        self.text.append(f"  note: {text}")
        self.md += ["", f"> {text}", ""]


def _trials_section(doc: _Doc, df: pd.DataFrame, folder: Path, out: Path, top: int, plots: bool,
                    rep: Report) -> None:
    best_json = _read_json(folder / "best.json")
    target, metric = _target(best_json, folder)
    s = summarize(df, best_json)
    study = _study_name(folder)
    sampler = _sampler_of(folder)
    states = ", ".join(f"{n} {k.lower()}" for k, n in s["states"].items()) or "none"
    doc.heading("Summary")
    doc.line(f"- study: {study}" + (f" (sampler: {sampler})" if sampler else ""))
    doc.line(f"- trials: {s['trials']} ({states})")
    doc.line(f"- wall time: {_fmt_duration(s['wall_seconds'])}, compute time (sum over trials): "
             f"{_fmt_duration(s['compute_seconds'])}, workers: {s['workers'] if s['workers'] is not None else '-'}")
    if target is not None:
        unit = _flops_scale([target]) if metric == "flops" else (1e6, "M params") if metric == "params" \
            else (1.0, "ms")
        w = best_json.get("w") if best_json else None
        cost = {"flops": "FLOPs", "params": "params", "latency": "latency"}.get(str(metric), str(metric))
        doc.line(f"- objective: reward = accuracy × ({cost} / T)^w, T = {target / unit[0]:.2f} {unit[1]}"
                 + (f", w = {w}" if w is not None else ""))
    b = s["best"]
    if b is None:
        doc.line("- best: no COMPLETE trial with a reward yet")
    else:
        fscale, funit = _flops_scale([b["flops"]])
        acc = b["accuracy"] * _pct_scale(df["accuracy"]) if b["accuracy"] is not None else None
        doc.line(f"- best: trial {b['trial']}, reward {b['reward']:.4f}, accuracy {_fmt(acc, '.2f')}%, "
                 f"{_fmt(None if b['flops'] is None else b['flops'] / fscale, '.2f')} {funit}, "
                 f"{_fmt(None if b['params'] is None else b['params'] / 1e6, '.3f')}M params; found after "
                 f"{_fmt_duration(b['seconds_to_best'])} ({b.get('finished_before_best', '-')} trials finished)")
        doc.line(f"  arch: {b['arch']}", f"  - arch: `{b['arch']}`")
    if s["best_accuracy"] is not None:
        doc.line(f"- best accuracy of any complete trial: {s['best_accuracy'] * _pct_scale(df['accuracy']):.2f}%")

    doc.heading(f"Leaderboard (top {top} by reward)")
    board = leaderboard(df, top) if ("reward" in df.columns or "accuracy" in df.columns) else df.iloc[0:0]
    table = _trial_table(board, df)
    table.insert(0, "rank", [str(i) for i in range(1, len(table) + 1)])
    doc.table(table, table.drop(columns=["arch"], errors="ignore"))
    if "arch" in table.columns and not table.empty:
        doc.text.append("  arch strings:")
        doc.text += [f"    #{t}: {a}" for t, a in zip(table.get("trial", table["rank"]), table["arch"])]

    if "accuracy" in df.columns and "flops" in df.columns:
        front = pareto_front(df)
        doc.heading("Pareto front (accuracy up, FLOPs down; complete trials)")
        ft = _trial_table(front, df)
        doc.table(ft, ft.drop(columns=["arch"], errors="ignore"))
    if not plots:
        return
    doc.heading("Plots")
    if "reward" in df.columns and "number" in df.columns and _complete(df)["reward"].notna().any():
        p = plot_history(df, out / "history.png", study, metric, best_json.get("w") if best_json else None)
        rep.plots.append(p)
        doc.image(p, out, "best reward so far vs trial")
    else:
        doc.note("no complete trial with a reward yet: no history plot")
    if "accuracy" in df.columns and "flops" in df.columns and _complete(df)["accuracy"].notna().any():
        p = plot_pareto(df, out / "pareto.png", study, target if metric == "flops" else None)
        rep.plots.append(p)
        doc.image(p, out, "accuracy vs FLOPs with the Pareto front")
        if target is not None and metric != "flops":
            doc.note(f"the target T is on {metric}, not FLOPs: no T line in the accuracy-vs-FLOPs plot")
    imp, note = param_importances(df, folder=folder)
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


_GRID_SPEC = {"kind": ("kind", "", 1), "alpha": ("α", ".3f", 1), "beta": ("β", ".3f", 1),
              "gamma": ("γ", ".3f", 1), "product": ("α·β²·γ²", ".3f", 1),
              "flops_ratio": ("FLOPs ratio", ".3f", 1), "accuracy": ("accuracy (%)", ".2f", 0.01),
              "resolution": ("resolution (px)", "", 1), "params": ("params (M)", ".3f", 1e6),
              "flops": ("MFLOPs", ".2f", 1e6)}


def _units_for(df: pd.DataFrame, base: dict, giga_format: str) -> dict:
    """A table spec with the accuracy column in % (whether stored as a fraction or already in %)
    and FLOPs in the unit that suits their size (``giga_format`` when that unit is GFLOPs)."""
    spec = dict(base)
    acc = _col(df, "accuracy")
    if acc is not None and _pct_scale(df[acc]) == 1.0:
        spec["accuracy"] = ("accuracy (%)", ".2f", 1)
    flops = _col(df, "flops")
    if flops is not None:
        fscale, funit = _flops_scale(pd.to_numeric(df[flops], errors="coerce"))
        spec["flops"] = (funit, giga_format if funit == "GFLOPs" else ".2f", fscale)
    return spec


def _grid_section(doc: _Doc, df: pd.DataFrame, folder: Path, out: Path, top: int, plots: bool,
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
        nested = {k: v for k, v in coef.items() if isinstance(v, (dict, list))}
        for k, v in nested.items():
            doc.line(f"- {k}: {json.dumps(v, default=str)}")
        chosen = {k: _float(coef.get(k)) for k in ("alpha", "beta", "gamma")}
        if any(v is None for v in chosen.values()):
            inner = next((v for v in coef.values() if isinstance(v, dict) and "alpha" in v), None)
            chosen = {k: _float(inner.get(k)) for k in ("alpha", "beta", "gamma")} if inner else None
    spec = _units_for(df, _GRID_SPEC, giga_format=".2f")
    acc = _col(df, "accuracy")
    order = df
    if acc is not None:
        order = df.sort_values(acc, ascending=False, kind="stable", na_position="last")
    doc.heading(f"Grid ({len(df)} points" + (", best accuracy first)" if acc is not None else ")"))
    table = _generic_table(order, spec)
    doc.table(table, table.head(top))
    if len(table) > top:
        doc.text.append(f"  ... {len(table) - top} more rows in report.md (--top sets how many are shown here)")
    if not plots:
        return
    doc.heading("Plots")
    a, b, g = (_col(df, k) for k in ("alpha", "beta", "gamma"))
    if a and b and g:
        p, what = plot_grid(df, out / "grid_heatmap.png", study, chosen)
        rep.plots.append(p)
        doc.image(p, out, "alpha-beta grid heat map")
        doc.note(f"heat map at {what}")
    else:
        doc.note("no α/β/γ columns: no grid heat map")
    p2 = plot_grid_scatter(df, out / "grid_scatter.png", study)
    if p2 is not None:
        rep.plots.append(p2)
        doc.image(p2, out, "accuracy vs FLOPs ratio by scaling kind")


_FAMILY_SPEC = {"name": ("model", "", 1), "phi": ("φ", "g", 1), "depth": ("depth ×", ".3f", 1),
                "width": ("width ×", ".3f", 1), "resolution": ("resolution (px)", "", 1),
                "dropout": ("dropout", ".2f", 1), "params": ("params (M)", ".3f", 1e6),
                "flops": ("GFLOPs", ".3f", 1e9), "flops_ratio": ("FLOPs / B0", ".2f", 1),
                "ratio_vs_2phi": ("FLOPs / (2^φ·B0)", ".3f", 1), "accuracy": ("accuracy (%)", ".2f", 0.01)}


def _family_section(doc: _Doc, df: pd.DataFrame, folder: Path, out: Path, plots: bool, rep: Report) -> None:
    spec = _units_for(df, _FAMILY_SPEC, giga_format=".3f")
    phi = _col(df, "phi")
    rows = df.sort_values(phi, kind="stable") if phi else df
    doc.heading(f"Family ({len(df)} models)")
    doc.table(_generic_table(rows, spec))
    arch = _col(df, "arch")
    if arch is not None:
        name = _col(df, "name")
        doc.text.append("  arch strings:")
        doc.text += [f"    {n}: {a}" for n, a in zip(rows[name] if name else rows.index, rows[arch])]
        doc.md += ["", "Architectures:", ""] + [f"- {n}: `{a}`" for n, a in
                                                 zip(rows[name] if name else rows.index, rows[arch])]
    if not plots:
        return
    doc.heading("Plots")
    if phi is not None:
        p = plot_family(df, out / "family_scaling.png", folder.name)
        rep.plots.append(p)
        doc.image(p, out, "params and FLOPs vs phi")
    else:
        doc.note("no φ column: no family plot")


def make_report(path: str | os.PathLike, out: str | os.PathLike | None = None, *, top: int = 10,
                plots: bool = True, write: bool = True) -> Report:
    """Report on one results folder (or one results file): every table it holds (trials, grid,
    family), plots, and ``report.md`` in ``out`` (default: the folder itself)."""
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be a positive integer, got {top!r}")
    path = Path(path)
    first = _results_file(path)
    folder = path if path.is_dir() else path.parent
    files = find_results(folder) if path.is_dir() else {"?": first}
    tables = dict(_load(file) for file in files.values())
    if not path.is_dir():
        files = {next(iter(tables)): first}
    out_dir = Path(out) if out is not None else folder
    if write or plots:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ReportError(f"{out_dir}: cannot create the output folder ({_first_line(exc)})") from None
    doc = _Doc()
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


def _labels(folders: list[Path]) -> list[str]:
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
        file = _results_file(f)
        kind, df = _load(file)
        loaded.append((f if f.is_dir() else f.parent, kind, df))
    labels = _labels([f for f, _, _ in loaded])
    rows = []
    for label, (folder, kind, df) in zip(labels, loaded):
        row: dict[str, Any] = {"study": label, "kind": kind}
        if kind == "trials":
            s = summarize(df, _read_json(folder / "best.json"))
            b = s["best"] or {}
            pct = _pct_scale(df["accuracy"]) if "accuracy" in df.columns else 100.0
            row.update({
                "sampler": _sampler_of(folder) or "-",
                "trials": s["trials"],
                "complete": s["states"].get("COMPLETE", 0),
                "pruned": s["states"].get("PRUNED", 0),
                "failed": s["states"].get("FAIL", 0),
                "best reward": _fmt(b.get("reward"), ".4f"),
                "best trial": _fmt(b.get("trial"), "d"),
                "accuracy of best (%)": _fmt(None if b.get("accuracy") is None else b["accuracy"] * pct, ".2f"),
                "best accuracy (%)": _fmt(None if s["best_accuracy"] is None else s["best_accuracy"] * pct, ".2f"),
                "time to best": _fmt_duration(b.get("seconds_to_best")),
                "trials to best": _fmt(b.get("finished_before_best"), "d"),
                "wall time": _fmt_duration(s["wall_seconds"]),
            })
        else:
            acc = _col(df, "accuracy")
            row.update({"trials": len(df), "best accuracy (%)": _fmt(
                None if acc is None or df[acc].isna().all() else df[acc].max() * _pct_scale(df[acc]), ".2f")})
        rows.append(row)
    table = pd.DataFrame(rows).fillna("-").astype(str)
    if table["kind"].nunique() == 1:
        table = table.drop(columns="kind")
    common = Path(os.path.commonpath([str(f.resolve()) for f, _, _ in loaded]))
    out_dir = Path(out) if out is not None else common
    doc = _Doc()
    doc.heading("Comparison: " + " vs ".join(labels), level=1)
    doc.table(table)
    rep = Report(folder=common, out=out_dir, kinds=[k for _, k, _ in loaded], text="", markdown="")
    trials = [(label, df) for label, (_, kind, df) in zip(labels, loaded) if kind == "trials"]
    if plots and len(trials) >= 1:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ReportError(f"{out_dir}: cannot create the output folder ({_first_line(exc)})") from None
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


# ----------------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nas-report",
        description="Summarise results folders of nas-search, scale-search and scale-family: tables on the "
                    "console, PNG plots and report.md. Several folders are also compared side by side.")
    p.add_argument("paths", nargs="+", metavar="FOLDER",
                   help="results folder(s), e.g. results/nas-fashion_mnist (or a trials/grid/family file)")
    p.add_argument("--out", metavar="DIR",
                   help="write plots and Markdown here instead of into each folder (one sub-folder per "
                        "study when several are given)")
    p.add_argument("--top", type=int, default=10, metavar="K", help="leaderboard length (default 10)")
    p.add_argument("--no-plots", action="store_true", help="tables only: skip the PNG plots")
    return p


def main(argv: list[str] | None = None) -> None:
    from .cli import fail

    args = _parser().parse_args(argv)
    if args.top < 1:
        fail(f"--top must be a positive integer, got {args.top}")
    try:
        if len(args.paths) == 1:
            rep = make_report(args.paths[0], args.out, top=args.top, plots=not args.no_plots)
            print(rep.text, end="")
            print(f"\nreport: {rep.markdown_path}")
            return
        folders = [Path(p) for p in args.paths]
        for f in folders:  # every path is checked before anything is written
            _results_file(f)
        homes = [(f if f.is_dir() else f.parent).resolve() for f in folders]
        twice = sorted({str(h) for h in homes if homes.count(h) > 1})
        if twice:
            raise ReportError(f"the same results folder was given twice: {', '.join(twice)}")
        labels = _labels([f if f.is_dir() else f.parent for f in folders])
        reports = []
        for f, label in zip(folders, labels):
            out = None if args.out is None else Path(args.out) / label
            reports.append(make_report(f, out, top=args.top, plots=not args.no_plots))
        _, cmp_rep = compare(folders, args.out, plots=not args.no_plots)
        for rep in reports:
            print(rep.text)
        print(cmp_rep.text, end="")
        print("\nreports: " + ", ".join(str(r.markdown_path) for r in reports)
              + f"\ncomparison: {cmp_rep.markdown_path}")
    except (ValueError, OSError) as exc:  # ReportError is a ValueError
        fail(str(exc))


if __name__ == "__main__":  # pragma: no cover
    main()
