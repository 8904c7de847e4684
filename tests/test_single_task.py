"""Isolation does not depend on the batch size: one task runs in one worker process.

Only ``backend="serial"`` and ``CORRAL_WORKERS=1`` run tasks in the calling process
(test_serial.py). A single task that crashes gives ``WorkerCrashed``, not a dead program, and
what it changes in its process (working directory, environment) stays there.
"""

from __future__ import annotations

import ctypes
import os

import pytest

import corral
from corral import WorkerCrashed


def getpid(_=None):
    return os.getpid()


def segfault(_=None):
    ctypes.string_at(0)  # reads address 0: SIGSEGV


def change_process(directory):
    os.chdir(directory)
    os.environ["CORRAL_TEST_LEAK"] = "leaked"
    return os.getcwd()


@pytest.fixture(autouse=True)
def not_forced_serial(monkeypatch):
    monkeypatch.delenv("CORRAL_WORKERS", raising=False)


def test_a_single_item_map_runs_in_a_worker_process():
    assert corral.map(getpid, [0]) != [os.getpid()]


def test_a_single_task_run_runs_in_a_worker_process():
    report = corral.run([corral.Task(getpid)])
    assert report.results[0] != os.getpid()
    assert report.outcomes[0].pid == report.results[0]
    assert report.outcomes[0].worker == 0


def test_workers_1_runs_in_one_worker_process():
    pids = corral.map(getpid, range(4), workers=1)
    assert len(set(pids)) == 1 and pids[0] != os.getpid()


def test_a_single_segfaulting_task_gives_worker_crashed():
    (result,) = corral.map(segfault, [1], errors="return")
    assert isinstance(result.error, WorkerCrashed)
    assert result.error.signal == "SIGSEGV"


def test_a_single_task_does_not_change_the_callers_directory_or_environment(tmp_path):
    before = os.getcwd()
    (cwd,) = corral.map(change_process, [str(tmp_path)])
    assert cwd == str(tmp_path)
    assert os.getcwd() == before
    assert "CORRAL_TEST_LEAK" not in os.environ


def test_a_single_submit_runs_in_a_worker_process():
    with corral.Pool(workers=1) as pool:
        assert pool.submit(getpid).result(timeout=60) != os.getpid()


def test_serial_backend_still_runs_a_single_task_in_process():
    assert corral.map(getpid, [0], backend="serial") == [os.getpid()]
