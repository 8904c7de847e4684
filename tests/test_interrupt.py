"""Ctrl-C: the first SIGINT stops dispatching, cancels queued tasks, stops the running workers
after a short grace, and raises KeyboardInterrupt with the partial Report as ``.report``
(statuses ok / cancelled). Nothing keeps running afterwards.

Each test runs ``scripts/interrupt_batch.py`` in a subprocess of its own session, waits for
the markers its hanging tasks leave, sends SIGINT (to the coordinator alone, or to its whole
process group as a terminal does), and checks what the script caught and that every process
it had started is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from _procs import alive, marked, run_script, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SCRIPT = Path(__file__).parent / "scripts" / "interrupt_batch.py"
N = 10
EXIT_WAIT = 30.0
GONE_WAIT = 10.0


@dataclass
class Interrupted:
    returncode: int
    caught: dict
    stderr: str
    started: set[int]  # every process the script had started when it was interrupted
    workers: set[int]
    grandchildren: set[int]


def kill_all(pids):
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def interrupt(tmp_path, mode, *, group=False, times=1, running=2):
    """Run the script in ``mode``, wait until ``running`` items hang, send SIGINT ``times``
    times (to its process group when ``group``), and collect what happened."""
    proc = run_script(SCRIPT, tmp_path, mode)
    started: set[int] = set()
    try:
        wait_until(
            lambda: len(marked(tmp_path, "running")) >= running,
            f"{running} running tasks",
            proc=proc,
        )
        started = {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        for _ in range(times):
            if group:
                os.killpg(proc.pid, signal.SIGINT)
            else:
                os.kill(proc.pid, signal.SIGINT)
        try:
            stdout, stderr = proc.communicate(timeout=EXIT_WAIT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the script still runs {EXIT_WAIT} s after Ctrl-C") from None
        lines = [line for line in stdout.splitlines() if line.startswith("{")]
        caught = json.loads(lines[-1]) if lines else {}
        started |= marked(tmp_path, "worker") | marked(tmp_path, "grandchild")
        started.discard(proc.pid)
        return Interrupted(
            proc.returncode,
            caught,
            stderr,
            started,
            marked(tmp_path, "worker"),
            marked(tmp_path, "grandchild"),
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        leftovers = started | marked(tmp_path, "worker") | marked(tmp_path, "grandchild")
        # Give the processes the time the test allows them, then make sure of it.
        deadline = time.monotonic() + GONE_WAIT
        while any(alive(p) for p in leftovers - {proc.pid}) and time.monotonic() < deadline:
            time.sleep(0.05)
        kill_all(p for p in leftovers if p != proc.pid and alive(p))


def assert_all_gone(pids, what):
    deadline = time.monotonic() + GONE_WAIT
    while True:
        left = {p for p in pids if alive(p)}
        if not left:
            return
        if time.monotonic() > deadline:
            described = []
            for pid in sorted(left):
                with contextlib.suppress(psutil.NoSuchProcess):
                    described.append(f"{pid}: {' '.join(psutil.Process(pid).cmdline())[:100]}")
            raise AssertionError(f"{what} still running after Ctrl-C: {described}")
        time.sleep(0.05)


EXPECTED_STATUSES = ["ok", "ok"] + ["cancelled"] * (N - 2)


# -- what the caller sees --------------------------------------------------------------------------
def test_ctrl_c_raises_keyboard_interrupt_with_the_partial_report(tmp_path):
    result = interrupt(tmp_path, "map")
    assert result.returncode != 0
    assert result.caught["caught"] == "KeyboardInterrupt"
    assert result.caught["has_report"], result.stderr
    assert result.caught["statuses"] == EXPECTED_STATUSES
    assert result.caught["values"][:2] == [0, 1]
    assert result.caught["keys"] == list(range(N))


def test_ctrl_c_cancelled_outcomes_carry_task_cancelled(tmp_path):
    result = interrupt(tmp_path, "map")
    assert result.caught["errors"][:2] == ["NoneType", "NoneType"]
    assert result.caught["errors"][2:] == ["TaskCancelled"] * (N - 2)


def test_ctrl_c_during_run_reports_every_task_by_key(tmp_path):
    result = interrupt(tmp_path, "run")
    assert result.returncode != 0
    assert result.caught["keys"] == [f"t{x}" for x in range(N)]
    assert result.caught["statuses"] == EXPECTED_STATUSES


def test_ctrl_c_cancels_scheduled_tasks_and_their_dependants(tmp_path):
    result = interrupt(tmp_path, "scheduled")
    assert result.caught["keys"] == [f"t{x}" for x in range(N)] + ["agg"]
    assert result.caught["statuses"] == [*EXPECTED_STATUSES, "cancelled"]


def test_ctrl_c_exits_promptly(tmp_path):
    started = time.monotonic()
    result = interrupt(tmp_path, "map")
    assert result.returncode != 0
    assert time.monotonic() - started < EXIT_WAIT


# -- nothing keeps running -------------------------------------------------------------------------
def test_ctrl_c_stops_running_workers(tmp_path):
    result = interrupt(tmp_path, "map")
    assert len(result.workers) == 2
    assert_all_gone(result.workers, "workers")


def test_ctrl_c_stops_subprocesses_started_by_running_tasks(tmp_path):
    result = interrupt(tmp_path, "map")
    assert len(result.grandchildren) == 2
    assert_all_gone(result.grandchildren, "subprocesses of tasks")


def test_ctrl_c_leaves_no_process_of_the_script_behind(tmp_path):
    result = interrupt(tmp_path, "map")
    assert result.started
    assert_all_gone(result.started, "processes started by the interrupted script")


def test_ctrl_c_stops_a_task_that_ignores_sigterm(tmp_path):
    result = interrupt(tmp_path, "stubborn")
    assert result.returncode != 0
    assert result.caught["statuses"] == EXPECTED_STATUSES
    assert_all_gone(result.started, "processes of SIGTERM-ignoring tasks")


# -- a terminal's Ctrl-C: SIGINT to the whole foreground process group -----------------------------
def test_ctrl_c_to_the_process_group_gives_the_same_partial_report(tmp_path):
    result = interrupt(tmp_path, "map", group=True)
    assert result.returncode != 0
    assert result.caught["caught"] == "KeyboardInterrupt"
    assert result.caught["statuses"] == EXPECTED_STATUSES  # no task saw the SIGINT itself


def test_ctrl_c_to_the_process_group_leaves_nothing_running(tmp_path):
    result = interrupt(tmp_path, "map", group=True)
    assert_all_gone(result.started, "processes started by the interrupted script")


def test_repeated_ctrl_c_still_stops_everything(tmp_path):
    result = interrupt(tmp_path, "stubborn", group=True, times=3)
    assert result.returncode != 0
    assert_all_gone(result.started, "processes started by the interrupted script")


# -- one worker: the tasks run in the caller's process ---------------------------------------------
def test_ctrl_c_with_one_worker_gives_the_partial_report(tmp_path):
    result = interrupt(tmp_path, "serial", group=True, running=1)
    assert result.returncode != 0
    assert result.caught["caught"] == "KeyboardInterrupt"
    assert result.caught["statuses"] == EXPECTED_STATUSES
