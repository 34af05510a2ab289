"""What the bench tests share: importing a bench script as a module, and running its ``main`` on
arguments that must be a usage error."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from effnas.threads import ENV_DEFAULTS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def import_bench(monkeypatch):
    """``import_bench("supernet")``: the module ``bench/supernet.py``."""
    def load(name: str):
        for key, value in ENV_DEFAULTS.items():  # the bench sets them at import; keep this process's
            monkeypatch.setenv(key, value)
        monkeypatch.syspath_prepend(str(ROOT))
        return importlib.import_module(f"bench.{name}")

    return load


@pytest.fixture
def usage_error(monkeypatch, capsys):
    """``usage_error(bench, argv)``: run ``bench.main()`` on ``argv``, check it exits 2 (argparse's
    usage error) and return the last line it wrote to stderr."""
    def run(bench, argv: list[str]) -> str:
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as info:
            bench.main()
        assert info.value.code == 2
        return capsys.readouterr().err.strip().splitlines()[-1]

    return run
