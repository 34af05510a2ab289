"""bench/common.py: the record of finished runs that several bench processes may share."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

WRITER = """
import sys
sys.path.insert(0, {root!r})
from pathlib import Path
from bench.common import Runs
runs = Runs(Path({path!r}))
for i in range(60):
    runs.put(f"{{sys.argv[1]}}/{{i}}", {{"i": i, "pad": "x" * 2000}})
"""


@pytest.fixture
def Runs(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from bench.common import Runs

    return Runs


def test_two_processes_saving_to_one_file_keep_every_row(Runs, tmp_path):
    path = tmp_path / "supernet.json"
    Runs(path).put("before", 1)
    code = WRITER.format(root=str(ROOT), path=str(path))
    procs = [subprocess.Popen([sys.executable, "-c", code, name]) for name in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    runs = Runs(path).data["runs"]
    assert len(runs) == 121 and runs["before"] == 1
    assert {runs[f"{name}/{i}"]["i"] for name in "ab" for i in range(60)} == set(range(60))


def test_a_save_keeps_what_another_record_of_the_file_saved(Runs, tmp_path):
    first, second = Runs(tmp_path / "r.json"), Runs(tmp_path / "r.json")
    first.put("a", 1)
    second.put("b", 2)  # opened before "a" was saved
    assert Runs(tmp_path / "r.json").data["runs"] == {"a": 1, "b": 2} == second.data["runs"]


def test_partial_tau_removes_what_both_owe_to_a_third(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from bench.common import kendall_tau, partial_tau

    z = [1, 1, 2, 2]                     # both sides rise with z ...
    x = [1, 2, 3, 4]
    agree, disagree = [1, 2, 3, 4], [2, 1, 4, 3]  # ... and within each level of z agree or disagree
    assert kendall_tau(x, disagree) == pytest.approx(1 / 3)
    assert partial_tau(x, disagree, z) == pytest.approx(-1.0)
    assert partial_tau(x, agree, z) == pytest.approx(1.0)
    assert partial_tau(x, agree, x) != partial_tau(x, agree, x)  # z orders x completely: nan
