"""Ctrl-C in the middle of a chunk: every task that finished before the interrupt is ``ok`` in
the partial report, with its value; the task that was running is ``cancelled`` after one
attempt; a task that never started is ``cancelled`` with ``attempts == 0``.

Each test runs ``scripts/partial_batch.py`` in a subprocess of its own session, waits until
each busy worker's chunk has reached its hanging item (the ``running-<x>`` markers), sends
SIGINT and reads the report the script printed. The markers say which tasks started and which
finished, so the expected report is known exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from _procs import kill_script, marked, run_script, still_alive_after, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SCRIPT = Path(__file__).parent / "scripts" / "partial_batch.py"
N = 20
EXIT_WAIT = 30.0


@dataclass
class Run:
    returncode: int
    caught: dict
    stderr: str
    started: set[int]
    finished: set[int]
    workers: set[int]


def items(marker_dir: Path, prefix: str) -> set[int]:
    return marked(marker_dir, prefix)  # the same NAME-NUMBER files, here NUMBER is an item


def interrupt(tmp_path: Path, mode: str, running: int) -> Run:
    proc = run_script(SCRIPT, tmp_path, mode)
    try:
        wait_until(
            lambda: len(items(tmp_path, "running")) >= running,
            f"{running} hanging tasks",
            proc=proc,
        )
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C does
        try:
            stdout, stderr = proc.communicate(timeout=EXIT_WAIT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the script still runs {EXIT_WAIT} s after Ctrl-C") from None
        lines = [line for line in stdout.splitlines() if line.startswith('{"caught"')]
        caught = json.loads(lines[-1]) if lines else {}
        return Run(
            proc.returncode,
            caught,
            stderr,
            items(tmp_path, "start"),
            items(tmp_path, "done"),
            marked(tmp_path, "worker"),
        )
    finally:
        kill_script(proc, tmp_path)


def check_report(run: Run) -> None:
    """The report agrees with what the tasks themselves recorded."""
    assert run.caught.get("has_report"), run.stderr
    statuses, values, attempts = (run.caught[k] for k in ("statuses", "values", "attempts"))
    ok = {x for x in range(N) if statuses[x] == "ok"}
    assert ok == run.finished, (statuses, sorted(run.finished))
    for x in range(N):
        if x in ok:
            assert values[x] == x * x and attempts[x] == 1
        else:
            assert statuses[x] == "cancelled"
            assert attempts[x] == (1 if x in run.started else 0), (x, attempts)


def test_ctrl_c_keeps_the_finished_items_of_running_chunks(tmp_path):
    run = interrupt(tmp_path, "map", running=2)
    check_report(run)
    # both chunks of 5 had finished three items before they reached the hanging one
    assert run.finished == {0, 1, 2, 5, 6, 7}
    assert run.caught["statuses"].count("ok") == 6


def test_ctrl_c_keeps_the_finished_tasks_of_running_chunks_of_run(tmp_path):
    run = interrupt(tmp_path, "run", running=2)
    check_report(run)
    assert run.finished == {0, 1, 2, 5, 6, 7}


def test_ctrl_c_with_automatic_chunks_keeps_every_finished_task(tmp_path):
    run = interrupt(tmp_path, "auto", running=2)
    check_report(run)
    assert run.finished  # the first chunks of automatic size have several items each


def test_ctrl_c_in_serial_mode_keeps_the_finished_items_of_the_chunk(tmp_path):
    run = interrupt(tmp_path, "serial", running=1)
    check_report(run)
    assert run.finished == {0, 1, 2}
    assert run.caught["attempts"][3:5] == [1, 0]


def test_ctrl_c_after_a_hand_over_leaves_no_worker(tmp_path):
    run = interrupt(tmp_path, "map", running=2)
    assert run.returncode != 0
    assert len(run.workers) == 2
    assert not still_alive_after(run.workers, 10.0)


def test_a_worker_that_cannot_hand_over_is_stopped_after_a_bounded_wait(tmp_path):
    run = interrupt(tmp_path, "deaf", running=2)
    assert run.returncode != 0
    assert run.caught.get("has_report"), run.stderr
    statuses, attempts = run.caught["statuses"], run.caught["attempts"]
    # what the deaf workers had finished died with them: it could not be handed over
    assert statuses == ["cancelled"] * N
    assert attempts[:5] == [1, 1, 1, 1, 0] and attempts[5:10] == [1, 1, 1, 1, 0]
    assert attempts[10:] == [0] * (N - 10)
    assert not still_alive_after(run.workers, 10.0)
