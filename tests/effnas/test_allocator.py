"""The allocator the training commands start with: tcmalloc preloaded by restarting a console
script (effnas.allocator, effnas.scripts), the choice read from EFFNAS_ALLOCATOR. The speed is
bench/allocator.py's to measure; here: what is preloaded when, and that a bad choice is one line."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from effnas import allocator

INSTALLED = allocator.find_tcmalloc()  # .ci/run installs libtcmalloc-minimal4
FAMILY = ["base=efficientnet-b0", "coefficients=paper", "max_phi=1"]  # a command that starts in a second
VERBOSE = "hydra.verbose=effnas"  # the allocator line is logged at debug (stderr stays one line on errors)


@pytest.mark.parametrize("value, expected", [(None, "auto"), ("", "auto"), ("TCmalloc", "tcmalloc"),
                                             (" system ", "system")])
def test_choice(value, expected):
    assert allocator.choice({} if value is None else {allocator.ENV: value}) == expected


def test_a_bad_choice_names_the_value_and_the_valid_ones():
    with pytest.raises(ValueError, match=r"EFFNAS_ALLOCATOR='jemalloc': expected one of auto, tcmalloc, system"):
        allocator.choice({allocator.ENV: "jemalloc"})


def test_what_is_preloaded(monkeypatch):
    monkeypatch.setattr(allocator, "find_tcmalloc", lambda: "libtcmalloc_minimal.so.4")
    assert allocator.preload_for("auto", {}) == "libtcmalloc_minimal.so.4"
    assert allocator.preload_for("tcmalloc", {}) == "libtcmalloc_minimal.so.4"
    assert allocator.preload_for("system", {}) is None
    # already there (ours, or the full tcmalloc the user chose): nothing to do, no restart loop
    assert allocator.preload_for("auto", {"LD_PRELOAD": "libtcmalloc_minimal.so.4"}) is None
    assert allocator.preload_for("tcmalloc", {"LD_PRELOAD": "/opt/lib/libtcmalloc.so"}) is None
    # a preload of the user's own: kept as it is (auto), or tcmalloc put first (asked for)
    assert allocator.preload_for("auto", {"LD_PRELOAD": "libmine.so"}) is None
    assert allocator.preload_for("tcmalloc", {"LD_PRELOAD": "libmine.so"}) == "libtcmalloc_minimal.so.4 libmine.so"


def test_not_installed(monkeypatch):
    monkeypatch.setattr(allocator, "find_tcmalloc", lambda: None)
    assert allocator.preload_for("auto", {}) is None
    with pytest.raises(ValueError, match="EFFNAS_ALLOCATOR=tcmalloc but libtcmalloc_minimal is not installed "
                                         r"\(Debian/Ubuntu: apt-get install libtcmalloc-minimal4\)"):
        allocator.preload_for("tcmalloc", {})


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", allocator.ENV, allocator.MARK)}
    return {**env, **extra}


def _allocator_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "memory allocator:" in line]
    assert len(lines) == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    return lines[0].split("memory allocator:", 1)[1].strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is the Linux loader's")
@pytest.mark.parametrize("choice", ["auto", "system"])
def test_console_script_runs_with_the_allocator_chosen(tmp_path: Path, choice: str):
    """The script starts again with tcmalloc preloaded (auto, where installed) and says which it
    trains with; with system it does not restart. Same output either way."""
    proc = subprocess.run(["scale-family", *FAMILY, VERBOSE, f"results_dir={tmp_path}"], cwd=tmp_path, env=_env(
        **{allocator.ENV: choice}), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    used = "tcmalloc" if choice == "auto" and INSTALLED else "system"
    assert _allocator_line(proc) == f"{used} (EFFNAS_ALLOCATOR={choice})"
    assert "b1" in proc.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is the Linux loader's")
def test_a_python_caller_is_never_restarted(tmp_path: Path):
    """Called from Python (here ``python -c``), the script's function runs in the caller's process
    with the allocator it has: restarting would run the caller's code again."""
    code = textwrap.dedent(f"""
        import sys
        print("caller ran", flush=True)
        sys.argv = ["scale-family", *{FAMILY!r}, {VERBOSE!r}, "results_dir={tmp_path}"]
        from effnas.scripts import scale_family
        scale_family()
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("caller ran") == 1
    assert _allocator_line(proc) == "system (EFFNAS_ALLOCATOR=auto)"


def test_a_bad_choice_is_one_line_and_nothing_is_written(tmp_path: Path):
    proc = subprocess.run(["scale-family", *FAMILY, f"results_dir={tmp_path}"], cwd=tmp_path,
                          env=_env(**{allocator.ENV: "jemalloc"}), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: EFFNAS_ALLOCATOR='jemalloc': expected one of auto, tcmalloc, system"
    assert proc.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_only_the_restarts_own_preload_is_held_back_from_other_machines():
    lib = "libtcmalloc_minimal.so.4"
    env = {"LD_PRELOAD": lib, allocator.MARK: lib, "PATH": "/bin"}
    assert allocator.own_preload(env) == lib
    with allocator.without_own_preload(env) as removed:
        assert removed == lib and "LD_PRELOAD" not in env and allocator.MARK not in env
    assert env == {"LD_PRELOAD": lib, allocator.MARK: lib, "PATH": "/bin"}
    for theirs in ({"LD_PRELOAD": "libmine.so"}, {"LD_PRELOAD": f"libmine.so {lib}", allocator.MARK: lib}):
        before = dict(theirs)  # the user's own (or changed since): left as it is
        assert allocator.own_preload(theirs) is None
        with allocator.without_own_preload(theirs) as removed:
            assert removed is None and theirs == before


@pytest.mark.parametrize("node_has_it", [True, False])
def test_a_job_script_preloads_tcmalloc_only_where_the_node_has_it(tmp_path, node_has_it):
    """node_setup's line run by bash as a job script would, with an ldconfig that lists tcmalloc
    or not: LD_PRELOAD is set, or left unset (no ld.so error for every process on that node)."""
    lib = "libtcmalloc_minimal.so.4"
    fake = tmp_path / "bin"
    fake.mkdir()
    listing = f"\t{lib} (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/{lib}" if node_has_it else "\tlibc.so.6 (libc6)"
    (fake / "ldconfig").write_text(f"#!/bin/sh\necho '{listing}'\n")
    (fake / "ldconfig").chmod(0o755)
    script = allocator.node_setup(lib).replace("/sbin/ldconfig", str(fake / "ldconfig"))
    done = subprocess.run(["bash", "-c", f'{script}\necho "[$LD_PRELOAD]"'], capture_output=True, text=True,
                          env={"PATH": f"{fake}:/usr/bin:/bin"})
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.strip() == (f"[{lib}]" if node_has_it else "[]")
