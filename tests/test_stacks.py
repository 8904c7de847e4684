"""Hung and crashed tasks say where they were: a timed-out task's stack (every thread, asked
of the live worker before it is killed) in ``TaskTimeout.stack`` and its message; a worker
killed by a fatal signal leaves faulthandler's traceback in ``WorkerCrashed.stack``."""

from __future__ import annotations

import ctypes
import os
import signal
import time

import pytest

import corral
from corral._report.summary import render_summary

pytestmark = pytest.mark.timeout(120)


def spin_in_python(x):
    n = 0
    while True:  # a pure-Python loop: never returns
        n += 1


def sleep_forever(x):
    time.sleep(1000)


def read_address_zero(x):
    return ctypes.string_at(0)  # SIGSEGV


def abort_now(x):
    os.abort()  # SIGABRT


def _only_outcome(fn, **options):
    with pytest.raises(corral.BatchError) as caught:
        corral.map(fn, [1], workers=1, **options)
    return caught.value.report.outcomes[0]


@pytest.mark.slow
@pytest.mark.parametrize("fn", [spin_in_python, sleep_forever], ids=["loop", "sleep"])
def test_a_timed_out_task_names_the_function_it_hung_in(fn):
    outcome = _only_outcome(fn, timeout=0.5)
    error = outcome.error
    assert isinstance(error, corral.TaskTimeout)
    assert error.stack is not None and f"in {fn.__name__}" in error.stack
    # the message's tail says where, without corral's own frames
    assert f"in {fn.__name__}" in str(error)
    assert "_worker/loop.py" not in str(error) and "_worker/loop.py" in error.stack
    assert f"in {fn.__name__}" in render_summary(corral.Report([outcome]), width=400)


@pytest.mark.slow
def test_every_thread_of_the_hung_worker_is_in_the_stack():
    def with_a_thread(x):
        import threading

        threading.Thread(target=time.sleep, args=(1000,), daemon=True).start()
        spin_in_python(x)

    error = _only_outcome(with_a_thread, timeout=0.5).error
    assert error.stack.count("Thread 0x") + error.stack.count("thread 0x") >= 2
    assert "in spin_in_python" in error.stack


@pytest.mark.slow
def test_a_segfault_leaves_its_traceback_in_worker_crashed():
    error = _only_outcome(read_address_zero).error
    assert isinstance(error, corral.WorkerCrashed)
    assert error.signal == "SIGSEGV"
    assert error.stack is not None and "in read_address_zero" in error.stack
    assert "Segmentation fault" in error.stack
    assert "in read_address_zero" in str(error)


@pytest.mark.slow
def test_an_abort_leaves_its_traceback_in_worker_crashed():
    error = _only_outcome(abort_now).error
    assert isinstance(error, corral.WorkerCrashed)
    assert error.exitcode == -signal.SIGABRT
    assert error.stack is not None and "in abort_now" in error.stack


def test_a_worker_that_exits_has_no_stack():
    error = _only_outcome(os._exit).error  # os._exit(1): no fatal signal, nothing to tell
    assert isinstance(error, corral.WorkerCrashed) and error.stack is None


def test_stack_errors_pickle_with_their_stack():
    import pickle

    error = corral.TaskTimeout("k", 1.0, pid=5, stack='  File "x.py", line 3 in f\n')
    again = pickle.loads(pickle.dumps(error))
    assert again.stack == error.stack and str(again) == str(error)


def test_the_files_of_a_process_killed_before_closing_its_pool_are_swept(tmp_path, monkeypatch):
    import subprocess
    import sys
    import tempfile

    from corral._backends import remains

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    script = (
        "import os, signal, corral\n"
        "pool = corral.Pool(1)\n"
        "pool.map(abs, [1])\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", script], env=env, timeout=60)
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith(remains.PREFIX)]
    assert len(left) == 1  # its coordinator was killed: nothing closed the pool
    monkeypatch.setattr(remains, "_swept", False)
    files = remains.WorkerFiles(1, False, 100)
    try:
        now = [p.name for p in tmp_path.iterdir() if p.name.startswith(remains.PREFIX)]
        assert now == [os.path.basename(files._dir)]
    finally:
        files.close()
