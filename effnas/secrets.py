"""Passwords never reach the terminal or a file: storage URLs are redacted in everything effnas
prints and saves, in every log record of the process, and in the files Hydra writes itself.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

__all__ = ["REDACTED", "redact_url", "redact_secrets", "redact_tree", "RedactSecrets", "redact_log_records"]

log = logging.getLogger("effnas")

REDACTED = "***"


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


def redact_tree(node: Any) -> Any:
    """A config tree (dicts / lists) with every string's credentials redacted."""
    if isinstance(node, dict):
        return {k: redact_tree(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [redact_tree(v) for v in node]
    return redact_secrets(node) if isinstance(node, str) else node


# Secrets in what Hydra writes and prints


def redact_log_records() -> None:
    """Redact every log record of this process as it is made (a record factory outlives the
    handler swaps of Hydra's launchers, which reconfigure logging before they list the jobs)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redacts_secrets", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 -- a malformed record is logging's business
            return record
        clean = redact_secrets(message)
        if clean != message:
            record.msg, record.args = clean, None
        return record

    factory.redacts_secrets = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def _redact_file(path: Path) -> None:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return
    clean = redact_secrets(text)
    if clean != text:
        from .io import write_text

        write_text(clean, path)


class RedactSecrets:
    """Hydra callback (``hydra.callbacks``, set by ``conf/storage/postgres.yaml``): a storage URL
    given on the command line (``storage.url=postgresql://user:password@...``) is not left in
    what Hydra prints ("#0 : ... storage.url=...") or saves (``multirun.yaml``, ``.hydra/*.yaml``).

    Hydra has saved and printed those before any job code runs, so this scrubs them as soon as it
    can. Jobs a launcher pickles for later (``.submitit/``) still carry the URL they need: prefer
    the ``EFFNAS_STORAGE_URL`` environment variable, which Hydra never resolves into its files."""

    def __init__(self, **_: Any) -> None:
        pass

    @staticmethod
    def _scrub(config: Any, multirun: bool) -> None:
        hydra_cfg = config.hydra
        if multirun:
            _redact_file(Path(hydra_cfg.sweep.dir) / "multirun.yaml")
        subdir = hydra_cfg.get("output_subdir")
        output_dir = hydra_cfg.runtime.get("output_dir") if "runtime" in hydra_cfg else None
        if subdir and output_dir:
            for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
                _redact_file(Path(output_dir) / subdir / name)

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        redact_log_records()

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        redact_log_records()

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        redact_log_records()
        try:
            from hydra.core.hydra_config import HydraConfig
            from hydra.types import RunMode

            multirun = HydraConfig.get().mode == RunMode.MULTIRUN
        except Exception:  # noqa: BLE001 -- best effort, never stops a job
            multirun = False
        try:
            self._scrub(config, multirun)
        except Exception as exc:  # noqa: BLE001
            log.debug("could not scrub Hydra's files: %s", exc)

    def on_job_end(self, config: Any, job_return: Any = None, **kwargs: Any) -> None:
        pass

    def on_run_end(self, config: Any, **kwargs: Any) -> None:
        pass

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        try:
            _redact_file(Path(config.hydra.sweep.dir) / "multirun.yaml")
        except Exception:  # noqa: BLE001
            pass

