r"""The result tables -- one schema each, written by the stages and read by the report -- and the
export of a study's trials from the Optuna storage (the single source of truth).

``trials`` (stage 1), ``grid`` (scale-search) and ``family`` (scale-family) are :class:`Table`\ s:
the ordered columns and their pandas dtypes. Writers build their frames with
:meth:`Table.frame`; :func:`report.load_results` reads them back with the same schema, so a column
cannot be written under one name and read under another.
"""

from __future__ import annotations

import csv
import io
import math
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import optuna
import pandas as pd

from .io import atomic_write, locked

__all__ = ["Table", "TABLES", "TRIALS", "GRID", "FAMILY", "TRIAL_COLUMNS", "trials_frame", "export_study",
           "best_trial", "best_of", "best_candidate", "Throttle", "throttled", "EXPORT_SECONDS"]


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
    "plain_layers": "Int64",    # layers without a shortcut (what a short proxy run penalises most)
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
    "rerank_of": "Int64",      # a re-evaluation (the top k networks at a higher fidelity) of this trial
    "rerank_seed": "Int64",    # which of its seeds
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


def _retried_trial_number(trial: optuna.trial.FrozenTrial) -> int | None:
    """The first trial of the retry chain this trial continues: optuna's record (retries of dead or
    interrupted workers' trials), else effnas's ``retry_of`` user attribute.

    Optuna's record is the ``failed_trial`` system attribute, what
    ``RetryHeartbeatStaleTrialCallback.retried_trial_number`` returns; it is read directly because
    that experimental function costs a warnings context per call, and this runs once per row."""
    number = trial.system_attrs.get("failed_trial")
    return number if number is not None else trial.user_attrs.get("retry_of")


def _duration_seconds(t: optuna.trial.FrozenTrial) -> float | None:
    start, end = t.datetime_start, t.datetime_complete
    return (end - start).total_seconds() if start and end else None


# The columns of TRIALS that are not the trial's user attribute of the same name; every other
# fixed column is (``reward``, ``arch``, ``worker``, ``duplicate_of``, ...).
_COMPUTED: dict[str, Callable[[optuna.trial.FrozenTrial], Any]] = {
    "number": lambda t: t.number,
    "state": lambda t: t.state.name,
    "datetime_start": lambda t: t.datetime_start,
    "datetime_complete": lambda t: t.datetime_complete,
    "duration_seconds": _duration_seconds,
    "retry_of": _retried_trial_number,
}
_TRIAL_GETTERS = tuple((col, _COMPUTED.get(col)) for col in TRIALS.columns)


def _trial_row(t: optuna.trial.FrozenTrial, param_names: Sequence[str]) -> tuple:
    """One row of the trials table, in column order: :data:`TRIAL_COLUMNS`, then the parameters."""
    user, params = t.user_attrs, t.params
    return (*[get(t) if get is not None else user.get(col) for col, get in _TRIAL_GETTERS],
            *[params.get(name) for name in param_names])


def _param_dtype(values: Iterable[Any]) -> str:
    """The dtype of a stage-choice column, from its raw values: ints stay ints even with missing
    entries, strings are strings, other numbers floats, anything mixed with strings strings."""
    kinds = set(map(type, values))
    kinds.discard(type(None))
    if kinds and all(issubclass(k, str) for k in kinds):
        return "string"
    if kinds and all(issubclass(k, int) and not issubclass(k, bool) for k in kinds):
        return "Int64"
    return "float64" if all(issubclass(k, (int, float)) for k in kinds) else "string"


def _rows_frame(rows: Sequence[tuple], param_names: Sequence[str]) -> pd.DataFrame:
    """The typed frame of :func:`_trial_row` rows (already in order), column by column."""
    names = [*TRIALS.columns, *param_names]
    columns = list(zip(*rows)) if rows else [()] * len(names)
    data = {}
    for name, values in zip(names, columns):
        dtype = TRIALS.columns.get(name) or _param_dtype(values)
        data[name] = pd.Series(values, dtype=object).astype(dtype)
    return pd.DataFrame(data, columns=names)


def trials_frame(trials: Iterable[optuna.trial.FrozenTrial], param_names: list[str]) -> pd.DataFrame:
    """One row per trial with :data:`TRIAL_COLUMNS` then one column per stage choice."""
    rows = sorted((_trial_row(t, param_names) for t in trials), key=lambda row: row[0])
    return _rows_frame(rows, param_names)


def best_candidate(t: optuna.trial.FrozenTrial, key: str = "reward") -> bool:
    """Can ``t`` be the study's best trial: COMPLETE with a ``key`` user attribute, trained itself (not
    a copy of a duplicate's twin) and not a re-evaluation of another trial."""
    user = t.user_attrs
    return (t.state == optuna.trial.TrialState.COMPLETE and user.get(key) is not None
            and user.get("duplicate_of") is None and user.get("rerank_of") is None)


def best_of(trials: Iterable[optuna.trial.FrozenTrial], key: str = "reward") -> optuna.trial.FrozenTrial | None:
    """The :func:`best_candidate` with the highest ``key`` user attribute (ties: lowest number)."""
    done = [t for t in trials if best_candidate(t, key)]
    if not done:
        return None
    return max(done, key=lambda t: (t.user_attrs[key], -t.number))


def best_trial(study: optuna.Study, key: str = "reward") -> optuna.trial.FrozenTrial | None:
    """The COMPLETE trial with the highest ``key`` user attribute (ties: lowest number)."""
    return best_of(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)), key)


# ------------------------------------------------------------------------------------------------
# Exporting the trials table at a cost that does not grow with every trial
#
# Optuna never changes a finished trial (a FAIL, PRUNED or COMPLETE trial refuses attributes and
# states), so its row -- and its line of CSV -- is made once per process and storage; only the
# trials still WAITING or RUNNING are read again at each export. What remains per export is the
# storage's list of trials, the typed frame and the two files, and :class:`Throttle` bounds how
# often that runs.

EXPORT_SECONDS = 5.0
"""How often at most the trials table is exported while trials finish (:class:`Throttle`)."""

EXPORT_SHARE = 0.02
"""And at most this share of the time: an export that took 0.2 s is not repeated within 10 s."""


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _csv_int(v: Any) -> str:
    return "" if _missing(v) else str(int(v))


def _csv_float(v: Any) -> str:
    return "" if _missing(v) else repr(float(v))


def _csv_str(v: Any) -> str:
    return "" if _missing(v) else str(v)


def _csv_datetime(v: Any) -> str:
    if _missing(v):
        return ""
    if isinstance(v, datetime):
        return v.isoformat(sep=" ", timespec="microseconds")
    return str(pd.Timestamp(v).as_unit("us"))


_CSV_CELL: dict[str, Callable[[Any], str]] = {"int64": _csv_int, "Int64": _csv_int, "float64": _csv_float,
                                              "string": _csv_str, "datetime64[us]": _csv_datetime}


class _RowCache:
    """The rows and CSV lines of the finished trials of one storage (trial ids are unique within a
    storage), for one list of parameter columns."""

    def __init__(self, param_names: Sequence[str]) -> None:
        self.param_names = list(param_names)
        self.rows: dict[int, tuple] = {}     # trial id -> row, finished trials only
        self.lines: dict[int, str] = {}      # trial id -> CSV line, for the dtypes in `line_dtypes`
        self.line_dtypes: tuple[str, ...] = ()
        self.lock = threading.Lock()

    def table(self, trials: Sequence[optuna.trial.FrozenTrial]) -> tuple[pd.DataFrame, str]:
        """The typed frame and the CSV text of ``trials`` (in number order)."""
        with self.lock:
            rows = []
            for t in trials:
                row = self.rows.get(t._trial_id)
                if row is None:
                    row = _trial_row(t, self.param_names)
                    if t.state.is_finished():
                        self.rows[t._trial_id] = row
                rows.append(row)
            df = _rows_frame(rows, self.param_names)
            dtypes = tuple(str(d) for d in df.dtypes)
            if not all(d in _CSV_CELL for d in dtypes):  # a column type this writer does not know
                return df, df.to_csv(index=False)
            if dtypes != self.line_dtypes:  # a stage-choice column changed type: lines are stale
                self.lines.clear()
                self.line_dtypes = dtypes
            cells = [_CSV_CELL[d] for d in dtypes]
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(df.columns)
            out = [buffer.getvalue()]
            for t, row in zip(trials, rows):
                line = self.lines.get(t._trial_id)
                if line is None:
                    buffer.seek(0)
                    buffer.truncate()
                    writer.writerow([cell(v) for cell, v in zip(cells, row)])
                    line = buffer.getvalue()
                    if t._trial_id in self.rows:
                        self.lines[t._trial_id] = line
                out.append(line)
            return df, "".join(out)


_CACHES: "weakref.WeakKeyDictionary[Any, dict[tuple[str, ...], _RowCache]]" = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def _row_cache(study: optuna.Study, param_names: Sequence[str]) -> _RowCache:
    storage = study._storage
    with _CACHES_LOCK:
        try:
            by_params = _CACHES.setdefault(storage, {})
        except TypeError:  # a storage that cannot be weakly referenced: no cache
            return _RowCache(param_names)
        return by_params.setdefault(tuple(param_names), _RowCache(param_names))


def _write_csv(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)


def export_study(study: optuna.Study, folder: str | Path, param_names: list[str],
                 stem: str = "trials") -> pd.DataFrame:
    """Regenerate ``<stem>.parquet``/``.csv`` from the storage; returns the frame.

    Reading the storage and writing the files happen under an exclusive lock on the folder, so
    a worker holding an older snapshot cannot replace a newer table written by another worker.
    Each file is replaced atomically. Rows of finished trials are made once per process (see
    above); the CSV is what ``df.to_csv(index=False)`` writes, except that times always carry
    their microseconds."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cache = _row_cache(study, param_names)
    with locked(folder / f".{stem}.lock"):
        trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
        df, text = cache.table(trials)
        atomic_write(folder / f"{stem}.parquet", lambda p: df.to_parquet(p, index=False))
        atomic_write(folder / f"{stem}.csv", lambda p: _write_csv(p, text))
    return df


class Throttle:
    """Run a function at most every ``seconds`` (default :data:`EXPORT_SECONDS`) and at most
    ``share`` of the time: an export that took ``d`` seconds is not run again for
    ``max(seconds, d / share)`` seconds. The first call runs. A worker calls it after every trial
    (``throttle(export, study)``); trials slower than the interval are exported after each one, as
    before, and fast ones at most every few seconds instead of after each. Whoever throttles must
    export once more at the end (``nas-search`` does, also on SIGINT / SIGTERM); ``force=True``
    exports now (on demand)."""

    def __init__(self, seconds: float | None = None, share: float | None = None) -> None:
        self.seconds = EXPORT_SECONDS if seconds is None else seconds
        self.share = EXPORT_SHARE if share is None else share
        self.next = -math.inf
        self.runs = 0

    def due(self) -> bool:
        return time.monotonic() >= self.next

    def __call__(self, fn: Callable[..., Any], *args: Any, force: bool = False, **kwargs: Any) -> bool:
        """``fn(*args, **kwargs)`` if due (or ``force``); returns whether it ran."""
        started = time.monotonic()
        if not force and started < self.next:
            return False
        try:
            fn(*args, **kwargs)
        finally:
            took = time.monotonic() - started
            self.next = started + max(self.seconds, took / self.share if self.share > 0 else 0.0)
            self.runs += 1
        return True


_THROTTLES: "weakref.WeakKeyDictionary[Callable[..., Any], Throttle]" = weakref.WeakKeyDictionary()


def throttled(fn: Callable[..., Any], *args: Any, force: bool = False, **kwargs: Any) -> bool:
    """``fn(*args, **kwargs)`` through the :class:`Throttle` of ``fn`` -- one per function object,
    so a run's own ``export`` closure gets its own, dropped with it. Returns whether it ran."""
    with _CACHES_LOCK:
        throttle = _THROTTLES.get(fn)
        if throttle is None:
            throttle = _THROTTLES[fn] = Throttle()
    return throttle(fn, *args, force=force, **kwargs)
