"""Finding and loading results tables: the same typed frame from Parquet or CSV.

A results folder holds the table its stage wrote, as ``<stem>.parquet`` and ``<stem>.csv`` of one
frame. The three tables are :data:`effnas.results.TABLES` -- ``trials`` (``nas-search``),
``grid`` (``scale-search``), ``family`` (``scale-family``) -- and the loader reads them with the
writers' schema (:meth:`effnas.results.Table.conform`): every schema column is there, in the
schema's order and dtype (a column the file lacks comes back as nulls), so a column cannot be
written under one name and read under another. Columns after the fixed ones are typed from their
values; the trials table's stage choices ``s<i>_<what>`` become categoricals.

Parquet keeps the dtypes, so loading it is ``pd.read_parquet`` plus vectorised casts. CSV is read
as text and converted per schema column (numbers, ISO timestamps), then goes through the same
``conform``: both formats give equal frames.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from effnas.results import TABLES, Table

__all__ = ["ReportError", "KINDS", "FORMATS", "CHOICE_COLUMN", "find_results", "load_results"]

KINDS: tuple[str, ...] = tuple(TABLES)  # ("trials", "grid", "family"): the order looked for in a folder
FORMATS = (".parquet", ".csv")
CHOICE_COLUMN = re.compile(r"^(s\d+_\w+|activation|stem|head)$")  # a search choice: s3_kernel, or a global one

_INT = r"[+-]?\d+"
_DATETIME = r"\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?"
_TZ = r"(?:Z|[+-]\d{2}:?\d{2})$"
_BOOL = {"True": True, "False": False, "true": True, "false": False}


class ReportError(ValueError):
    """A results path that cannot be read: missing, empty, corrupt or of an unknown kind."""


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


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


def _kind_of(path: Path, columns: pd.Index) -> str:
    """The file's stem when it names a table, else the table its columns say it is."""
    if path.stem in TABLES:
        return path.stem
    cols = set(map(str, columns))
    if {"alpha", "beta", "gamma"} <= cols:
        return "grid"
    if "phi" in cols:
        return "family"
    if {"number", "state"} <= cols:
        return "trials"
    raise ReportError(f"{path}: not a trials, grid or family table (columns: {', '.join(map(str, columns))}; "
                      "a grid has alpha, beta and gamma, a family phi, a trials table number and state)")


# ------------------------------------------------------------------------------------- dtypes


def _is_text(s: pd.Series) -> bool:
    return pd.api.types.is_object_dtype(s) or pd.api.types.is_string_dtype(s)


def _as_datetime(s: pd.Series) -> pd.Series:
    """``datetime64[us]``, naive; timestamps with an offset are converted to UTC first."""
    if not pd.api.types.is_datetime64_any_dtype(s):
        text = s.astype("string")
        utc = bool(text.str.contains(_TZ, regex=True).fillna(False).any())
        s = pd.to_datetime(text, format="ISO8601", utc=utc)
    if getattr(s.dt, "tz", None) is not None:
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    return s.astype("datetime64[us]")


def _integer(s: pd.Series) -> pd.Series:
    return s.astype("int64") if not s.isna().any() else s.astype("Int64")


def _numbers(values: pd.Series) -> pd.Series | None:
    """``values`` (no nulls) as numbers if every one is a number, else None. The first value is
    tried alone first, so a column of words costs one conversion, not one per row."""
    if values.empty or pd.to_numeric(values.iloc[:1], errors="coerce").isna().any():
        return None
    numbers = pd.to_numeric(values, errors="coerce")
    return numbers if numbers.notna().all() else None


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
    text = values.astype("string")
    if _numbers(text) is not None:
        if pd.api.types.is_integer_dtype(pd.to_numeric(text)) or text.str.fullmatch(_INT).all():
            return _integer(pd.to_numeric(s.astype("string")))
        return pd.to_numeric(s.astype("string")).astype("float64")
    if text.isin(list(_BOOL)).all():
        return s.astype("string").map(_BOOL, na_action="ignore").astype("boolean")
    if text.iloc[:1].str.fullmatch(_DATETIME).all() and text.str.fullmatch(_DATETIME).all():
        return _as_datetime(s)
    return s.astype("string")


def as_choice(s: pd.Series) -> pd.Series:
    """A stage choice as a categorical whose categories are the sorted values: integers when every
    value is whole (an expand ratio of 6, even if stored as 6.0), else floats, else strings.
    One sorted factorisation of the column: no Python per row."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        s = s.astype(s.cat.categories.dtype if len(s.cat.categories) else "float64")
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_datetime64_any_dtype(s):
        base = s.astype("string")
    elif pd.api.types.is_numeric_dtype(s):
        base = s
    else:
        text = s.astype("string")
        base = pd.to_numeric(text) if _numbers(text.dropna()) is not None else text
    codes, uniques = pd.factorize(base, sort=True)
    if pd.api.types.is_numeric_dtype(base):
        values = np.asarray(uniques, dtype="float64")
        whole = np.array_equal(values, np.round(values))
        cats = pd.Index(values.astype("int64")) if whole else pd.Index(values, dtype="float64")
    else:
        cats = pd.Index(np.asarray(uniques, dtype=object), dtype="str")
    return pd.Series(pd.Categorical.from_codes(codes, dtype=pd.CategoricalDtype(cats)), index=s.index,
                     name=s.name)


def _whole(s: pd.Series) -> pd.Series:
    """Floats that are all whole numbers (``1000.0``, as CSV writes an integer column with gaps)
    as ``Int64``; a fraction is an error."""
    present = s.dropna().to_numpy()
    if not np.array_equal(present, np.round(present)):
        bad = present[present != np.round(present)][0]
        raise ValueError(f"{bad!r} is not a whole number")
    return s.astype("Int64")


def _from_text(s: pd.Series, dtype: str) -> pd.Series:
    """A schema column read as text (CSV), converted to what its dtype needs before ``conform``."""
    if dtype.startswith("datetime64"):
        return _as_datetime(s)
    if dtype in ("int64", "Int64", "float64"):
        return pd.to_numeric(s.astype("string"))
    return s


def _conform(raw: pd.DataFrame, table: Table, path: Path) -> pd.DataFrame:
    """``raw`` with the schema's columns and dtypes (``table.conform``), then the extra columns
    typed from their values (stage choices of a trials table as categoricals)."""
    fixed, extra = {}, {}
    for col in raw.columns:
        s = raw[col]
        dtype = table.columns.get(col)
        try:
            if dtype is None:
                extra[col] = as_choice(s) if table.stem == "trials" and CHOICE_COLUMN.match(str(col)) \
                    else _infer(s)
                continue
            if _is_text(s) and dtype != "string":
                s = _from_text(s, dtype)
            elif dtype.startswith("datetime64") and s.dtype != dtype:
                s = _as_datetime(s)
            if dtype in ("int64", "Int64") and pd.api.types.is_float_dtype(s):
                s = _whole(s)  # conform's cast would truncate 1.5 to 1 without a word
            fixed[col] = s
        except (ValueError, TypeError, OverflowError) as exc:
            want = f"{dtype} values" if dtype else "values of one type"
            raise ReportError(f"{path}: column {col!r} does not hold {want} ({first_line(exc)})") from None
    index = pd.RangeIndex(len(raw))
    frame = pd.DataFrame(fixed, index=index)
    try:
        typed = table.conform(frame)
    except (ValueError, TypeError, OverflowError) as exc:
        bad = next((c for c in table.columns if c in frame.columns and not _casts(frame[c], table.columns[c])), None)
        what = f"column {bad!r} does not hold {table.columns[bad]} values" if bad else "does not match the schema"
        raise ReportError(f"{path}: {what} ({first_line(exc)})") from None
    # The extra columns join after the schema's (where conform puts them), in the file's order.
    return pd.concat([typed, pd.DataFrame(extra, index=index)], axis=1) if extra else typed


def _casts(s: pd.Series, dtype: str) -> bool:
    try:
        s.astype(dtype if not (dtype == "int64" and s.isna().any()) else "Int64")
        return True
    except (ValueError, TypeError, OverflowError):
        return False


# ------------------------------------------------------------------------------------ reading


def _read_table(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        try:
            with open(path, "rb") as f:  # one open: a concurrent atomic replace cannot tear the read
                return pd.read_parquet(f)
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for a corrupt file
            raise ReportError(f"{path}: not a readable Parquet file ({first_line(exc)})") from None
    if path.suffix == ".csv":
        try:
            # Everything as text: the dtypes are decided by the schema and the values, not by
            # read_csv's guesses. A row longer than the header is an error (not silently an index).
            with warnings.catch_warnings():
                warnings.simplefilter("error", pd.errors.ParserWarning)
                return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], index_col=False)
        except pd.errors.EmptyDataError:
            raise ReportError(f"{path}: empty CSV file (no header)") from None
        except (pd.errors.ParserError, pd.errors.ParserWarning, UnicodeDecodeError, ValueError) as exc:
            raise ReportError(f"{path}: not a readable CSV file ({first_line(exc)})") from None
    raise ReportError(f"{path}: unknown results file type {path.suffix!r} (expected .parquet or .csv)")


def load_file(path: Path) -> tuple[str, pd.DataFrame]:
    """``(kind, typed frame)`` of one results file."""
    raw = _read_table(path)
    if len(raw.columns) == 0:
        raise ReportError(f"{path}: the table has no columns")
    kind = _kind_of(path, raw.columns)
    if kind == "trials":
        missing = [c for c in ("number", "state") if c not in raw.columns]
        if missing:
            raise ReportError(f"{path}: a trials table needs the column(s) {', '.join(missing)}")
    return kind, _conform(raw, TABLES[kind], path)


def results_file(path: Path) -> Path:
    """``path`` itself when it is a file, else the folder's first table (trials, grid, family)."""
    if not path.exists():
        raise ReportError(f"{path}: no such file or folder (expected a results folder holding trials, grid "
                          "or family .parquet/.csv, or one such file)")
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
    ``.parquet``/``.csv`` file, the same from either format: the schema's columns and dtypes
    (:data:`effnas.results.TABLES`; columns the file lacks as nulls), then any other column --
    stage choices ``s<i>_<what>`` of a trials table as categoricals with sorted categories, the
    rest typed by their values. The kind is in ``df.attrs["kind"]``, the file in
    ``df.attrs["source"]``. Raises :class:`ReportError` (a ``ValueError``)."""
    file = results_file(Path(path))
    kind, df = load_file(file)
    df.attrs.update(kind=kind, source=str(file))
    return df
