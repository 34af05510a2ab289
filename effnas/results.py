r"""The result tables -- one schema each, written by the stages and read by the report -- and the
export of a study's trials from the Optuna storage (the single source of truth).

``trials`` (stage 1), ``grid`` (scale-search) and ``family`` (scale-family) are :class:`Table`\ s:
the ordered columns and their pandas dtypes. Writers build their frames with
:meth:`Table.frame`; :func:`report.load_results` reads them back with the same schema, so a column
cannot be written under one name and read under another.
"""

from __future__ import annotations

import fcntl
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import optuna
import pandas as pd

from .io import write_table

__all__ = ["Table", "TABLES", "TRIALS", "GRID", "FAMILY", "TRIAL_COLUMNS", "trials_frame", "export_study",
           "best_trial"]


@dataclass(frozen=True)
class Table:
    """A result table: its file stem (``<stem>.parquet`` / ``.csv``) and ordered ``column: dtype``.
    ``extra`` names the dtype of columns that follow the fixed ones (stage choices of ``trials``)."""

    stem: str
    columns: Mapping[str, str]
    extra: str | None = None

    def frame(self, rows: Iterable[Mapping[str, Any]], extra_columns: Iterable[str] = ()) -> pd.DataFrame:
        """Rows -> a frame with exactly the schema's columns (missing values as nulls), typed."""
        extra_columns = list(extra_columns)
        df = pd.DataFrame(list(rows), columns=[*self.columns, *extra_columns])
        for col, dtype in self.columns.items():
            df[col] = df[col].astype(dtype)
        return df

    def conform(self, df: pd.DataFrame) -> pd.DataFrame:
        """A frame read back from Parquet or CSV, with the schema's dtypes (columns the file lacks
        are added as nulls: older files stay readable)."""
        out = df.copy()
        for col, dtype in self.columns.items():
            if col not in out.columns:
                out[col] = pd.Series([None] * len(out), dtype=dtype if dtype != "int64" else "Int64")
                continue
            if dtype.startswith("datetime"):
                out[col] = pd.to_datetime(out[col], errors="coerce").astype(dtype)
            elif dtype == "int64" and out[col].isna().any():
                out[col] = out[col].astype("Int64")
            else:
                out[col] = out[col].astype(dtype)
        fixed = [c for c in self.columns]
        return out[fixed + [c for c in out.columns if c not in self.columns]]


TRIALS = Table("trials", {
    "number": "int64",
    "state": "string",
    "reward": "float64",
    "accuracy": "float64",
    "flops": "Int64",
    "params": "Int64",
    "latency_ms": "float64",
    "arch": "string",
    "epochs": "Int64",
    "train_seconds": "float64",
    "worker": "string",
    "seed": "Int64",
    "datetime_start": "datetime64[us]",
    "datetime_complete": "datetime64[us]",
    "duration_seconds": "float64",
    "reason": "string",
    "retry_of": "Int64",
    "duplicate_of": "Int64",    # not trained: the same architecture as this trial (result copied)
    "rerank_of": "Int64",       # a re-evaluation (top-k, higher fidelity) of this trial
    "rerank_seed": "Int64",     # which of its seeds
}, extra="stage choices: s<i>_op, s<i>_expand, ... (one column per search-space parameter)")

GRID = Table("grid", {
    "number": "int64",
    "state": "string",
    "kind": "string",
    "alpha": "float64",
    "beta": "float64",
    "gamma": "float64",
    "product": "float64",
    "flops_ratio": "float64",
    "resolution": "Int64",
    "params": "Int64",
    "flops": "Int64",
    "accuracy": "float64",
    "train_seconds": "float64",
    "epochs": "Int64",
    "seed": "Int64",
    "matched_to": "Int64",
    "duplicate_of": "Int64",
    "retry_of": "Int64",
    "worker": "string",
    "arch": "string",
    "datetime_start": "datetime64[us]",
    "datetime_complete": "datetime64[us]",
    "duration_seconds": "float64",
    "reason": "string",
})

FAMILY = Table("family", {
    "name": "string",
    "phi": "int64",
    "depth": "float64",
    "width": "float64",
    "resolution": "int64",
    "dropout": "float64",
    "params": "int64",
    "flops": "int64",
    "flops_ratio": "float64",     # FLOPs / B0's FLOPs
    "ideal_ratio": "float64",     # 2 ** phi: what the constraint promises
    "ratio_vs_2phi": "float64",   # flops_ratio / 2 ** phi
    "formula_ratio": "float64",   # (alpha * beta**2 * gamma**2) ** phi
    "arch": "string",
    "accuracy": "float64",        # scale-family train.upto=K: b0..bK trained with the proxy protocol
    "train_seconds": "float64",
})

TABLES: dict[str, Table] = {t.stem: t for t in (TRIALS, GRID, FAMILY)}

# Fixed columns of trials.{parquet,csv}, in order; one column per stage choice follows.
TRIAL_COLUMNS: Mapping[str, str] = TRIALS.columns


def _user(trial: optuna.trial.FrozenTrial, key: str) -> Any:
    return trial.user_attrs.get(key)


def _retried_trial_number(trial: optuna.trial.FrozenTrial) -> int | None:
    """The first trial of the retry chain this trial continues: optuna's record (retries of dead or
    interrupted workers' trials), else effnas's ``retry_of`` user attribute."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        number = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
    return number if number is not None else _user(trial, "retry_of")


def trials_frame(trials: Iterable[optuna.trial.FrozenTrial], param_names: list[str]) -> pd.DataFrame:
    """One row per trial with :data:`TRIAL_COLUMNS` then one column per stage choice."""
    rows = []
    for t in trials:
        start, end = t.datetime_start, t.datetime_complete
        row = {
            "number": t.number,
            "state": t.state.name,
            "reward": _user(t, "reward"),
            "accuracy": _user(t, "accuracy"),
            "flops": _user(t, "flops"),
            "params": _user(t, "params"),
            "latency_ms": _user(t, "latency_ms"),
            "arch": _user(t, "arch"),
            "epochs": _user(t, "epochs"),
            "train_seconds": _user(t, "train_seconds"),
            "worker": _user(t, "worker"),
            "seed": _user(t, "seed"),
            "datetime_start": start,
            "datetime_complete": end,
            "duration_seconds": (end - start).total_seconds() if start and end else None,
            "reason": _user(t, "reason"),
            "retry_of": _retried_trial_number(t),
            "duplicate_of": _user(t, "duplicate_of"),
            "rerank_of": _user(t, "rerank_of"),
            "rerank_seed": _user(t, "rerank_seed"),
        }
        for name in param_names:
            row[name] = t.params.get(name)
        rows.append(row)
    df = TRIALS.frame(rows, param_names)
    for name in param_names:  # from the raw values: ints stay ints even with missing entries
        values = [r[name] for r in rows if r[name] is not None]
        if values and all(isinstance(v, str) for v in values):
            df[name] = df[name].astype("string")
        elif values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            df[name] = df[name].astype("Int64")
        else:
            df[name] = pd.to_numeric(df[name], errors="coerce").astype("float64") \
                if all(isinstance(v, (int, float)) for v in values) else df[name].astype("string")
    return df.sort_values("number", kind="stable").reset_index(drop=True)


def best_trial(study: optuna.Study, key: str = "reward") -> optuna.trial.FrozenTrial | None:
    """The COMPLETE trial with the highest ``key`` user attribute (ties: lowest number)."""
    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if t.user_attrs.get(key) is not None and t.user_attrs.get("duplicate_of") is None
            and t.user_attrs.get("rerank_of") is None]
    if not done:
        return None
    return max(done, key=lambda t: (t.user_attrs[key], -t.number))


def export_study(study: optuna.Study, folder: str | Path, param_names: list[str],
                 stem: str = "trials") -> pd.DataFrame:
    """Regenerate ``<stem>.parquet``/``.csv`` from the storage; returns the frame.

    Reading the storage and writing the files happen under an exclusive lock on the folder, so
    a worker holding an older snapshot cannot replace a newer table written by another worker."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f".{stem}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            df = trials_frame(study.get_trials(deepcopy=False), param_names)
            write_table(df, folder, stem)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return df
