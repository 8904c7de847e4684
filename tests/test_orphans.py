"""No orphans: workers exit when the coordinator dies, even by SIGKILL, and take what their
tasks started with them, within a few seconds. And a batch full of crashes and timeouts
leaves no process behind once it returns.

The coordinator is ``scripts/orphan_batch.py`` run in a subprocess: the test waits for the
markers its tasks leave, snapshots every process the script has started, SIGKILLs it, and
checks that each of those processes is gone. Orphans are re-parented away from the test
process, so the autouse leak guard cannot see them: these tests look them up by pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from _procs import alive, marked, multiprocessing_helpers, run_script, still_alive_after, wait_until

import corral

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SCRIPT = Path(__file__).parent / "scripts" / "orphan_batch.py"
START_METHODS = ["fork", "forkserver", "spawn"]
GONE_WAIT = 10.0


# -- helpers ---------------------------------------------------------------------------------------
def describe(pids):
    out = []
    for pid in sorted(pids):
        with contextlib.suppress(psutil.NoSuchProcess):
            process = psutil.Process(pid)
            out.append(f"{pid} ({process.status()}): {' '.join(process.cmdline())[:100]}")
    return out


def kill_coordinator(tmp_path, start_method, mode, *, workers=2, grandchildren=0):
    """Start the script, wait for its markers, SIGKILL it; every process it had started,
    and which of them are still alive ``GONE_WAIT`` seconds later."""
    proc = run_script(SCRIPT, tmp_path, start_method, mode)
    started: set[int] = set()
    try:
        if mode == "idle":
            wait_until(lambda: (tmp_path / "ready").exists(), "the idle pool", proc=proc)
        else:
            wait_until(
                lambda: (
                    len(marked(tmp_path, "worker")) >= workers
                    and len(marked(tmp_path, "grandchild")) >= grandchildren
                ),
                "the tasks' markers",
                proc=proc,
            )
        started = {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        started |= marked(tmp_path, "worker") | marked(tmp_path, "grandchild")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        left = still_alive_after(started, GONE_WAIT)
        return started, left
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in started | marked(tmp_path, "worker") | marked(tmp_path, "grandchild"):
            if pid != proc.pid and alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)


# -- the coordinator is SIGKILLed ------------------------------------------------------------------
@pytest.mark.parametrize("start_method", START_METHODS)
def test_busy_workers_and_their_subprocesses_exit_when_the_coordinator_is_killed(
    tmp_path, start_method
):
    started, left = kill_coordinator(tmp_path, start_method, "busy", grandchildren=2)
    assert marked(tmp_path, "worker") <= started
    assert len(marked(tmp_path, "grandchild")) == 2
    assert not left, f"outlived the coordinator by {GONE_WAIT} s: {describe(left)}"


def test_idle_pool_workers_exit_when_the_coordinator_is_killed(tmp_path):
    started, left = kill_coordinator(tmp_path, "forkserver", "idle")
    assert marked(tmp_path, "worker") <= started
    assert not left, f"outlived the coordinator by {GONE_WAIT} s: {describe(left)}"


def test_workers_ignoring_sigterm_exit_when_the_coordinator_is_killed(tmp_path):
    _, left = kill_coordinator(tmp_path, "forkserver", "stubborn", grandchildren=2)
    assert not left, f"outlived the coordinator by {GONE_WAIT} s: {describe(left)}"


def test_worker_stuck_in_c_code_holding_the_gil_exits_when_the_coordinator_is_killed(tmp_path):
    _, left = kill_coordinator(tmp_path, "forkserver", "gil")
    assert len(marked(tmp_path, "worker")) == 2
    assert not left, f"outlived the coordinator by {GONE_WAIT} s: {describe(left)}"


# -- after a batch with crashes and timeouts, nothing is left --------------------------------------
def mixed_task(x, marker_dir):
    """Item 1 crashes, item 2 hangs with a subprocess, item 3 raises, the rest return."""
    markers = Path(marker_dir)
    (markers / f"worker-{os.getpid()}").touch()
    if x == 1:
        os._exit(3)
    if x == 2:
        child = subprocess.Popen(["sleep", "1000"])
        (markers / f"grandchild-{child.pid}").touch()
        time.sleep(1000)
    if x == 3:
        raise ValueError(x)
    return x


def test_no_process_is_left_after_a_batch_with_crashes_and_timeouts(tmp_path):
    report = corral.run(
        [corral.Task(mixed_task, (x, str(tmp_path))) for x in range(8)],
        workers=2,
        chunksize=1,
        timeout=0.5,
        kill_grace=0.2,
        errors="return",
    )
    assert [o.status for o in report.outcomes] == [
        "ok",
        "crashed",
        "timeout",
        "failed",
        "ok",
        "ok",
        "ok",
        "ok",
    ]
    recorded = marked(tmp_path, "worker") | marked(tmp_path, "grandchild")
    assert len(marked(tmp_path, "grandchild")) == 1
    left = still_alive_after(recorded, GONE_WAIT)
    assert not left, f"left behind by the batch: {describe(left)}"
    mine = {p.pid for p in psutil.Process().children(recursive=True)} - multiprocessing_helpers()
    assert not {p for p in mine if alive(p)}, describe(mine)
