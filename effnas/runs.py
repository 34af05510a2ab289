"""Where a run writes: the study folder under ``results_dir`` and the resolved config saved
beside the results (passwords redacted), so that every result can be reproduced."""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path
from typing import Any

import yaml

from .io import write_text
from .secrets import redact_tree
from .study.recovery import worker_id

__all__ = ["study_folder", "check_study_name", "save_config"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def check_study_name(name: str, key: str = "search.study_name") -> str:
    """A study name is one folder name: letters, digits, ``. _ + -``; never a path."""
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
        raise ValueError(f"{key}={name!r} is not a valid study name: use letters, digits and . _ + - "
                         f"(it names one folder inside results_dir, never a path)")
    return name


def study_folder(results_dir: str | Path, study_name: str, key: str = "search.study_name") -> Path:
    """``<results_dir>/<study_name>``, absolute; the name cannot leave ``results_dir``."""
    return Path(results_dir).expanduser().resolve() / check_study_name(study_name, key)


def save_config(cfg: dict[str, Any], folder: Path, *, first: bool = True) -> Path:
    """Save the resolved config (passwords redacted) as ``configs/<time>_<host>_<pid>.yaml`` for
    every worker run, and as ``config.yaml`` for the study's first accepted run (``first``), so
    nothing is overwritten."""
    text = yaml.safe_dump(redact_tree(cfg), sort_keys=False)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_file = folder / "configs" / f"{stamp}_{worker_id().replace(':', '_')}.yaml"
    write_text(text, run_file)
    config = folder / "config.yaml"
    if first and not config.exists():
        write_text(text, config)
    return run_file
