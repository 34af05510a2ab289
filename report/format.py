"""Units and display tables: FLOPs as MFLOPs/GFLOPs (multiply-adds, the paper's convention),
accuracy in percent, durations, and the console-text + Markdown document built side by side."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

__all__ = ["flops_scale", "pct_scale", "fmt", "fmt_duration", "trial_table", "generic_table", "Doc"]


def flops_scale(values: Iterable[float]) -> tuple[float, str]:
    vals = [v for v in values if v is not None and not pd.isna(v)]
    return (1e9, "GFLOPs") if vals and max(vals) >= 1e9 else (1e6, "MFLOPs")


def pct_scale(values: pd.Series) -> float:
    """Accuracy is stored as a fraction; a table already in percent is left as is."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    return 1.0 if not v.empty and v.max() > 1.0 else 100.0


def fmt(v: Any, spec: str) -> str:
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return "-"
    return format(v, spec)


def fmt_duration(s: float | None) -> str:
    if s is None or pd.isna(s):
        return "-"
    s = float(s)
    if s < 60:
        return f"{s:.1f}s"
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _scaled(s: pd.Series, spec: str, divisor: float = 1.0, factor: float = 1.0) -> pd.Series:
    return s.map(lambda v: fmt(None if pd.isna(v) else v * factor / divisor, spec))


def trial_table(rows: pd.DataFrame, df: pd.DataFrame, arch: bool = True) -> pd.DataFrame:
    """Display frame (strings) of trial rows: trial, reward, accuracy %, FLOPs, params, ..."""
    fscale, funit = flops_scale(pd.to_numeric(df["flops"], errors="coerce")) if "flops" in df.columns \
        else (1e6, "MFLOPs")
    pct = pct_scale(df["accuracy"]) if "accuracy" in df.columns else 100.0
    out = pd.DataFrame(index=rows.index)
    if "number" in rows.columns:
        out["trial"] = rows["number"].map(lambda v: fmt(v, "d"))
    if "reward" in rows.columns:
        out["reward"] = rows["reward"].map(lambda v: fmt(v, ".4f"))
    if "accuracy" in rows.columns:
        out["accuracy (%)"] = _scaled(rows["accuracy"], ".2f", factor=pct)
    if "flops" in rows.columns:
        out[funit] = _scaled(rows["flops"], ".2f", fscale)
    if "params" in rows.columns:
        out["params (M)"] = _scaled(rows["params"], ".3f", 1e6)
    if "epochs" in rows.columns:
        out["epochs"] = rows["epochs"].map(lambda v: fmt(v, "d"))
    if "duration_seconds" in rows.columns:
        out["time"] = rows["duration_seconds"].map(fmt_duration)
    if arch and "arch" in rows.columns:
        out["arch"] = rows["arch"].map(lambda v: "-" if pd.isna(v) else str(v))
    return out.reset_index(drop=True)


def generic_table(df: pd.DataFrame, spec: dict[str, tuple[str, str, float]]) -> pd.DataFrame:
    """Display frame of the columns named in ``spec`` (column -> (heading, format, divisor)) that
    the frame has, followed by any other column as it is; ``arch`` and columns without a single
    value (a schema column the file did not have) are left out."""
    out = pd.DataFrame(index=df.index)
    for col, (heading, spec_fmt, div) in spec.items():
        if col not in df.columns:
            continue
        s = df[col]
        if spec_fmt and pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            out[heading] = _scaled(s, spec_fmt, div)
        else:
            out[heading] = s.map(lambda v: "-" if pd.isna(v) else str(v))
    for col in df.columns:
        if col not in spec and col != "arch" and df[col].notna().any():
            out[str(col)] = df[col].map(lambda v: "-" if pd.isna(v) else (f"{v:.4g}" if isinstance(v, float)
                                                                           else str(v)))
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


class Doc:
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
