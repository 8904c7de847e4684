"""Workers never run the user's main script.

A script without ``if __name__ == "__main__":`` must run its body once and each task once,
under every start method, whether run as a file, from stdin or through ``runpy.run_path``;
functions, classes, exceptions, the initializer and fixtures from ``__main__`` still work;
a worker's traceback names the script's file and shows its source line. Where multiprocessing
re-imports the main script anyway (a child process the user starts), corral refuses with an
error naming the fix instead of running the batch again.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).parent / "scripts"
SCRIPT = SCRIPTS / "main_unguarded.py"
SRC = str(Path(__file__).parent.parent / "src")
METHODS = ["forkserver", "spawn", "fork"]
HOW = ["file", "stdin", "runpy"]


def run_script(how: str, method: str, marks: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MARK_DIR": str(marks), "START_METHOD": method}
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("CORRAL_WORKERS", None)
    if how == "file":
        argv, stdin = [sys.executable, str(SCRIPT)], None
    elif how == "stdin":
        argv, stdin = [sys.executable, "-"], SCRIPT.read_text()
    else:
        argv, stdin = [sys.executable, "-c", f"import runpy; runpy.run_path({str(SCRIPT)!r})"], None
    return subprocess.run(
        argv, input=stdin, env=env, capture_output=True, text=True, timeout=240, check=False
    )


def names(marks: Path, prefix: str) -> list[str]:
    return sorted(p.name for p in marks.iterdir() if p.name.startswith(prefix))


@pytest.mark.slow
@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("method", METHODS)
def test_a_script_without_main_guard_runs_its_batch_once(tmp_path, method, how):
    proc = run_script(how, method, tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout  # printed once: the body ran once
    out = json.loads(lines[0])
    assert len(names(tmp_path, "body-")) == 1
    tasks = names(tmp_path, "task-")
    assert sorted(int(n.split("-")[1]) for n in tasks) == list(range(10))  # each task once
    assert out["me"] not in out["pids"]  # in worker processes, not serially
    assert out["values"] == [i * 10 + 100 if i != 7 else None for i in range(10)]
    assert out["point_class_kept"] and out["error_class_kept"]
    inits = names(tmp_path, "init-")
    assert len(inits) == 2 and {int(n.split("-")[2]) for n in inits} == set(out["pids"])


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_a_worker_traceback_names_the_script_and_its_source_line(tmp_path, method):
    proc = run_script("file", method, tmp_path)
    assert proc.returncode == 0, proc.stderr
    tb = json.loads(proc.stdout)["traceback"]
    assert f'File "{SCRIPT}", line' in tb and ", in task" in tb
    assert 'raise Odd(f"odd {point.x}")' in tb  # the source line
    assert "<dynamic-code>" not in tb
    # it starts at the user's frame: nothing of corral's loop above it
    assert re.findall(r'File "([^"]+)"', tb) == [str(SCRIPT)]


@pytest.mark.slow
def test_main_reimported_by_users_own_multiprocessing_fails_once_naming_the_fix(tmp_path):
    env = {**os.environ, "MARK_DIR": str(tmp_path)}
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("CORRAL_WORKERS", None)
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "main_unguarded_mp.py")],
        env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "child exit code 1" in proc.stdout  # the child refused ...
    assert 'if __name__ == "__main__":' in proc.stderr  # ... naming the fix
    assert "results [0, 1, 2, 3, 4, 5]" in proc.stdout
    tasks = names(tmp_path, "task-")
    assert sorted(int(n.split("-")[1]) for n in tasks) == list(range(6))  # once, not twice


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_a_worker_traceback_shows_source_that_only_the_callers_linecache_has(method):
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "main_cell.py"), method],
        env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert 'File "/nonexistent/ipykernel_1/cell-7.py", line 3, in from_cell' in proc.stdout
    assert "raise ValueError(f'cell {y}')" in proc.stdout
