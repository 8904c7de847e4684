"""A Pool or Executor that is never closed: garbage collection and interpreter exit clean it up.

A script that drops an Executor without ``shutdown()`` used to hang at exit forever, under
every start method: the engine thread kept the workers running, nothing closed the pool once
it was collected, and ``multiprocessing``'s exit handler waited on the workers. The scripts
(``scripts/unclosed_pool.py``) run as real subprocesses, with a bounded wait: they must exit
with code 0 at once, and every process they started must be gone shortly after.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
from _procs import still_alive_after
from _tasks import wait_for_file

import corral
from corral import _lifecycle

pytestmark = pytest.mark.timeout(180)

SCRIPT = Path(__file__).parent / "scripts" / "unclosed_pool.py"
START_METHODS = ["fork", "forkserver", "spawn"]
MODES = ["executor", "pool", "pending", "abandoned", "cycle", "running"]
EXIT_WAIT = 60.0  # the script takes about a second; a hang is what this bounds
GONE_WAIT = 15.0
WAIT = 60.0


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("start_method", START_METHODS)
def test_a_script_that_never_closes_its_pool_exits_and_leaves_nothing(
    start_method, mode, tmp_path
):
    try:
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), start_method, mode, str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=EXIT_WAIT,
        )
    except subprocess.TimeoutExpired as hung:
        pytest.fail(f"the script did not exit within {EXIT_WAIT} s: {hung.stderr!r}")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    started = set(report["processes"]) | set(report["workers"])
    if mode != "running":
        assert report["workers"], report
    assert not still_alive_after(started, GONE_WAIT), report


# -- in this process: collection ---------------------------------------------------------------
def square(x):
    return x * x


def pid_when(path):
    import os

    assert wait_for_file(path)
    return os.getpid()


def getpid(_=None):
    import os

    return os.getpid()


def dropped_executor():
    """An Executor used and dropped; its engine thread and worker pids, and a weak reference
    to its Pool."""
    ex = corral.Executor(2)
    pids = set(ex.map(getpid, range(4)))
    return ex._pool._life._thread, pids, weakref.ref(ex._pool)


def test_a_dropped_executor_is_collected_and_its_workers_stop():
    thread, pids, pool = dropped_executor()
    gc.collect()
    assert pool() is None  # nothing (the engine thread least of all) keeps the Pool alive
    thread.join(WAIT)
    assert not thread.is_alive()
    assert not still_alive_after(pids, GONE_WAIT)


def test_a_dropped_pool_still_finishes_what_was_submitted(tmp_path):
    def submit_and_drop():
        pool = corral.Pool(2)
        return pool.submit(pid_when, str(tmp_path / "go")), pool._life

    future, life = submit_and_drop()
    gc.collect()
    assert life.closed  # the finalizer ran: no new work, the workers stop once this is done
    (tmp_path / "go").touch()
    pid = future.result(timeout=WAIT)
    life._thread.join(WAIT)
    assert not life._thread.is_alive()
    assert life not in _lifecycle.live()
    assert not still_alive_after({pid}, GONE_WAIT)


def test_close_without_wait_still_releases_the_pool(tmp_path):
    pool = corral.Pool(2)
    pids = set(pool.map(getpid, range(4)))
    life = pool._life
    pool.close(wait=False)
    life._thread.join(WAIT)
    assert life not in _lifecycle.live()
    assert not still_alive_after(pids, GONE_WAIT)


def read_share(handle):
    return bytes(handle.value[:3])


def test_a_share_carried_by_a_dropped_pool_outlives_its_workers():
    handle = corral.share(b"abc" * 1000)

    def use_and_drop():
        pool = corral.Pool(2, start_method="forkserver")
        assert pool.map(read_share, [handle, handle]) == [b"abc", b"abc"]
        return pool._life._thread

    thread = use_and_drop()
    gc.collect()
    thread.join(WAIT)
    assert bytes(handle.value[:3]) == b"abc"  # its owner still holds it
    assert corral.map(read_share, [handle], workers=2) == [b"abc"]
    handle.release()
    with pytest.raises(corral.CorralError, match="released"):
        handle.value  # noqa: B018
