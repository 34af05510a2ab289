"""Trials -> DataFrame -> Parquet + CSV, replaced atomically; best.json; the saved config.

Files are regenerated from the Optuna storage (the single source of truth) after every trial by
whichever worker finished it. Each file is written to a temporary name in the same folder and
``os.replace``-d into place, so a reader -- or another worker writing at the same moment --
sees either the old or the new file, never a torn one.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import optuna
import pandas as pd

__all__ = ["TRIAL_COLUMNS", "trials_frame", "write_table", "write_json", "write_text", "export_study",
           "best_trial", "redact_url", "redact_secrets", "REDACTED"]

REDACTED = "***"

# Fixed columns of trials.{parquet,csv}, in order; one column per stage choice follows.
TRIAL_COLUMNS: dict[str, str] = {
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
}


def redact_url(url: str | None) -> str | None:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``.

    Everything up to the *last* ``@`` is hidden, so a password written with a raw ``@``, ``/`` or
    ``:`` (it should be percent-encoded, but users do write them) never shows in part."""
    if url is None:
        return None
    return re.sub(r"(://[^:/@]*:).*@", rf"\g<1>{REDACTED}@", str(url))


# scheme://user:password@ -- also as Hydra writes an override back: postgresql\://user\:password@
_CREDENTIALS = re.compile(r"(\\?://[^:/@\s'\"\\]*\\?:)[^\s'\"]*@")  # to the token's last @


def redact_secrets(text: str) -> str:
    """Every ``scheme://user:password@`` in a free text (Hydra's ``\\:`` escapes included), with the
    password replaced by ``***``; unlike :func:`redact_url` a match ends at whitespace or a quote."""
    return _CREDENTIALS.sub(rf"\g<1>{REDACTED}@", text)


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_table(df: pd.DataFrame, folder: str | os.PathLike, stem: str) -> tuple[Path, Path]:
    """Write ``<stem>.parquet`` and ``<stem>.csv`` atomically; returns both paths."""
    folder = Path(folder)
    parquet, csv = folder / f"{stem}.parquet", folder / f"{stem}.csv"
    _atomic_write(parquet, lambda p: df.to_parquet(p, index=False))
    _atomic_write(csv, lambda p: df.to_csv(p, index=False))
    return parquet, csv


def write_json(data: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    _atomic_write(path, lambda p: Path(p).write_text(json.dumps(data, indent=2, sort_keys=False,
                                                                default=str) + "\n"))
    return path


def write_text(text: str, path: str | os.PathLike) -> Path:
    path = Path(path)
    _atomic_write(path, lambda p: Path(p).write_text(text))
    return path


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
        }
        for name in param_names:
            row[name] = t.params.get(name)
        rows.append(row)
    df = pd.DataFrame(rows, columns=[*TRIAL_COLUMNS, *param_names])
    for col, dtype in TRIAL_COLUMNS.items():
        df[col] = df[col].astype(dtype)
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
            if t.user_attrs.get(key) is not None]
    if not done:
        return None
    return max(done, key=lambda t: (t.user_attrs[key], -t.number))


def export_study(study: optuna.Study, folder: str | os.PathLike, param_names: list[str],
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
