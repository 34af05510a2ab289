"""The report package stands on the engine alone: importing every module of it -- and making a
report with plots -- loads nothing of the search stages (``nas``, ``scaling_search``) nor torch.

Checked in a fresh interpreter: other tests of the session import those packages themselves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_SCRIPT = r"""
import importlib, json, pkgutil, sys, tempfile
from pathlib import Path

import report
from effnas.io import write_table
from effnas.results import TRIALS

modules = sorted(m.name for m in pkgutil.walk_packages(report.__path__, "report."))
for name in modules:
    importlib.import_module(name)
folder = Path(tempfile.mkdtemp()) / "study"
rows = [dict(number=i, state="COMPLETE", reward=0.5 + 0.01 * (i % 7), accuracy=0.7 + 0.01 * (i % 5),
             flops=1_000_000 + 1000 * i, s1_op="mbconv" if i % 2 else "conv", s1_kernel=3 + 2 * (i % 3 == 0))
        for i in range(12)]
write_table(TRIALS.frame(rows, ["s1_op", "s1_kernel"]), folder, "trials")
rep = report.make_report(folder, plots=True)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "scaling_search", "search_space")
                or m.split(".")[0].startswith("nas"))
print(json.dumps({"modules": modules, "plots": len(rep.plots), "loaded": loaded}))
"""


def test_report_imports_no_search_stage_and_no_torch(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"report.load", "report.analysis", "report.plots", "report.markdown", "report.cli"} \
        <= set(result["modules"])
    assert result["plots"] == 3  # history, Pareto, importance: the lazy imports of plotting ran too
    assert result["loaded"] == [], f"report loaded {result['loaded']}"
