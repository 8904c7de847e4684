"""A worker that cannot start says why, and the pool does not fall back to running serially.

The serial fallback is for a pool that cannot start processes at all; a failure of the user's
code in the worker (the initializer, something that does not load there) fails the tasks with
a ``WorkerStartError`` that carries the worker's own exception and traceback.
"""

from __future__ import annotations

import multiprocessing
import os
import warnings

import pytest

import corral
from corral import WorkerStartError


def _load_only_here(pid):
    if os.getpid() != pid:
        raise LookupError("this object cannot be loaded in a worker: no such table 'sweeps'")
    return LoadsOnlyHere()


class LoadsOnlyHere:
    """Pickles fine; unpickling raises anywhere but in the process that created it."""

    def __reduce__(self):
        return (_load_only_here, (os.getpid(),))


def noop(*_):
    return None


def getpid(_=None):
    return os.getpid()


def failing_initializer():
    raise OSError("licence server unreachable")


def error_text(error):
    text = str(error)
    cause = error.__cause__
    return text + (str(cause) if cause is not None else "")


@pytest.fixture(autouse=True)
def no_serial_fallback_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        yield


def test_initializer_failure_carries_the_exception_and_traceback():
    with corral.Pool(2, initializer=failing_initializer) as pool:
        results = pool.map(getpid, range(3), errors="return")
    assert all(isinstance(r.error, WorkerStartError) for r in results)
    text = error_text(results[0].error)
    assert "licence server unreachable" in text and "failing_initializer" in text


def test_a_worker_that_cannot_load_its_start_arguments_says_why():
    with corral.Pool(2, initializer=noop, initargs=(LoadsOnlyHere(),)) as pool:
        results = pool.map(getpid, range(3), errors="return")
    assert all(isinstance(r, corral.Failure) for r in results)  # not run serially here
    assert "no such table 'sweeps'" in error_text(results[0].error)


def test_workers_that_die_before_a_task_name_the_reason():
    # The function itself does not load in the workers: each dies on its first Call.
    fn = LoadsOnlyHereCallable()
    results = corral.map(fn, range(4), workers=2, errors="return")
    assert all(isinstance(r, corral.Failure) for r in results)
    assert "no such table 'sweeps'" in error_text(results[0].error)


class LoadsOnlyHereCallable:
    def __call__(self, x):
        return x

    def __reduce__(self):
        return (_load_only_here, (os.getpid(),))


def corral_in_a_daemonic_process(_):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pids = corral.map(getpid, range(3), workers=2, start_method="fork")
    return pids, os.getpid(), [str(w.message) for w in caught]


def test_a_pool_that_cannot_start_processes_runs_serially_and_says_why():
    # A daemonic process may not have children: the one case where the fallback applies.
    with multiprocessing.get_context("fork").Pool(1) as outer:
        pids, pid, messages = outer.map(corral_in_a_daemonic_process, [0])[0]
    assert pids == [pid] * 3
    assert len(messages) == 1
    assert "running serially" in messages[0] and "daemonic" in messages[0]
