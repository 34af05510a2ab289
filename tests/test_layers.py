"""Dependencies point one way: search_space <- effnas <- {nas, scaling_search, report}.

Each check imports every module of a package in a fresh interpreter and lists what got loaded."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    "search_space": ("effnas", "nas", "scaling_search", "report"),
    "effnas": ("nas", "scaling_search", "report"),
    "scaling_search": ("nas", "report"),
    "report": ("nas", "scaling_search", "torch"),
    "nas": ("scaling_search", "report"),
}


def _modules(package: str) -> list[str]:
    found = [package]
    for info in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
        found.append(info.name)
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_importing_every_module_loads_nothing_from_above(package):
    modules = _modules(package)
    code = ("import importlib, json, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.splitlines()[-1])
    bad = [m for m in loaded if m.split(".")[0] in FORBIDDEN[package]]
    assert not bad, f"importing {package} loaded {bad}"
    assert len(modules) > 1 or package == "search_space"


def test_codec_and_spec_do_not_import_each_other():
    import ast

    codec = ast.parse((ROOT / "search_space" / "codec.py").read_text())
    imports = [n for n in ast.walk(codec) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert not [n for n in imports if isinstance(n, ast.ImportFrom) and n.level], "codec imports from the package"
