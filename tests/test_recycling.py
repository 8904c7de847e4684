"""Worker recycling: ``max_tasks_per_worker`` and ``max_worker_memory`` replace a worker by a
fresh process, which shows as new pids (``os.getpid()`` in tasks, ``Outcome.pid``) and as
module state starting over. Retired workers exit; none accumulate.
"""

from __future__ import annotations

import collections
import os

import pytest
from _procs import live_workers, wait_until

import corral

pytestmark = pytest.mark.timeout(20)  # a batch that never finishes fails here, not after 300 s

HOARD: list[bytes] = []
"""Module state in the worker: memory a task keeps after it returns."""

SEEN: list[int] = []

HOARD_BYTES = 150_000_000  # far above a fresh worker's ~35 MB
LIMIT = "100MB"


# -- task functions -----------------------------------------------------------------------------
def pid_of(x):
    return os.getpid()


def square(x):
    return x * x


def hoard_and_pid(x):
    HOARD.append(b"\x01" * HOARD_BYTES)  # touched pages: really resident
    return os.getpid()


def remember(x):
    SEEN.append(x)
    return len(SEEN)


# -- helpers ------------------------------------------------------------------------------------
# -- max_tasks_per_worker -------------------------------------------------------------------------
def test_max_tasks_per_worker_gives_at_least_n_over_limit_distinct_pids():
    pids = corral.map(pid_of, range(10), workers=2, chunksize=1, max_tasks_per_worker=2)
    assert len(set(pids)) >= 5
    assert max(collections.Counter(pids).values()) <= 2


def test_max_tasks_per_worker_one_gives_a_fresh_process_per_task():
    pids = corral.map(pid_of, range(8), workers=2, chunksize=1, max_tasks_per_worker=1)
    assert len(set(pids)) == 8
    assert os.getpid() not in pids


def test_recycled_worker_starts_with_fresh_module_state():
    counts = corral.map(remember, range(8), workers=2, chunksize=1, max_tasks_per_worker=1)
    assert counts == [1] * 8


def test_without_recycling_workers_keep_their_module_state():
    counts = corral.map(remember, range(8), workers=2, chunksize=1)
    assert sum(counts) > 8  # some worker ran a second task in the same process
    assert len(counts) == 8


def test_outcome_pid_is_the_process_that_ran_the_task():
    report = corral.run(
        [corral.Task(pid_of, (x,)) for x in range(10)],
        workers=2,
        chunksize=1,
        max_tasks_per_worker=3,
    )
    assert [o.pid for o in report.outcomes] == [o.value for o in report.outcomes]
    assert len({o.pid for o in report.outcomes}) >= 4


def test_recycling_keeps_results_right_and_in_order():
    results = corral.map(square, range(200), workers=2, chunksize=7, max_tasks_per_worker=10)
    assert results == [x * x for x in range(200)]


def test_recycling_counts_tasks_not_chunks():
    pids = corral.map(pid_of, range(20), workers=2, chunksize=5, max_tasks_per_worker=5)
    counts = collections.Counter(pids)
    assert len(counts) >= 4
    assert max(counts.values()) <= 5


def test_retired_workers_exit_and_do_not_accumulate():
    with corral.Pool(2, max_tasks_per_worker=1) as pool:
        pids = pool.map(pid_of, range(20), chunksize=1)
        assert len(set(pids)) == 20
        wait_until(lambda: not set(pids) & live_workers(), "retired workers to exit")
        wait_until(lambda: len(live_workers()) <= 2, "only the two current workers")
        assert pool.map(square, range(5), chunksize=1) == [x * x for x in range(5)]


def test_pool_recycles_across_batches():
    with corral.Pool(2, max_tasks_per_worker=2) as pool:
        first = pool.map(pid_of, range(4), chunksize=1)
        second = pool.map(pid_of, range(4), chunksize=1)
    assert max(collections.Counter(first + second).values()) <= 2  # counts carry over


def test_max_tasks_per_worker_with_crashes_keeps_going():
    tasks = [corral.Task(pid_of, (x,)) for x in range(10)]
    tasks[4] = corral.Task(os._exit, (3,))
    report = corral.run(tasks, workers=2, chunksize=1, max_tasks_per_worker=2, errors="return")
    assert report.outcomes[4].status == "crashed"
    assert all(o.status == "ok" for i, o in enumerate(report.outcomes) if i != 4)


# -- max_worker_memory ---------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("limit", [LIMIT, 100_000_000])
def test_max_worker_memory_recycles_a_worker_that_grows(limit):
    pids = corral.map(hoard_and_pid, range(6), workers=2, chunksize=1, max_worker_memory=limit)
    assert len(set(pids)) == 6  # every task left its worker above the limit


def test_max_worker_memory_leaves_small_workers_alone():
    pids = corral.map(pid_of, range(20), workers=2, chunksize=1, max_worker_memory=LIMIT)
    assert len(set(pids)) <= 2


@pytest.mark.slow
def test_max_worker_memory_outcomes_report_the_peak_rss():
    report = corral.run(
        [corral.Task(hoard_and_pid, (x,)) for x in range(4)],
        workers=2,
        chunksize=1,
        max_worker_memory=LIMIT,
    )
    assert all(o.max_rss is not None and o.max_rss >= HOARD_BYTES for o in report.outcomes)
    assert len({o.pid for o in report.outcomes}) == 4


@pytest.mark.slow
def test_memory_recycled_workers_exit():
    with corral.Pool(2, max_worker_memory=LIMIT) as pool:
        pids = pool.map(hoard_and_pid, range(6), chunksize=1)
        # Every task's worker held too much memory, so each is retired and must exit.
        wait_until(lambda: not set(pids) & live_workers(), "memory-recycled workers to exit")
        wait_until(lambda: len(live_workers()) <= 2, "only the two current workers")
