"""Load: many tasks through one Pool, and many Pools in one process, leak nothing.

Bounds on counts, not on time: after a warm-up, the coordinator's file descriptors and
threads come back to what they were, and its RSS grows by less than a small bound. The
figures are printed (``FIGURE ...``, seen with ``-s``). ``CORRAL_LOAD_TASKS`` and
``CORRAL_LOAD_CYCLES`` size the runs (defaults 100,000 tasks and 50 cycles, which keep CI
bounded; the issue's figure is 1,000 cycles: ``CORRAL_LOAD_CYCLES=1000``).
"""

from __future__ import annotations

import gc
import os
import threading

import psutil
import pytest

import corral

TASKS = int(os.environ.get("CORRAL_LOAD_TASKS", "100000"))
CYCLES = int(os.environ.get("CORRAL_LOAD_CYCLES", "50"))
pytestmark = [pytest.mark.slow, pytest.mark.timeout(max(300, CYCLES))]
RSS_BOUND = 32 * 2**20  # bytes of growth allowed after the warm-up (allocator noise)


def inc(x: int) -> int:
    return x + 1


def usage() -> tuple[int, int, int]:
    """(RSS bytes, open fds, threads) of this process, after a collection."""
    gc.collect()
    me = psutil.Process()
    return me.memory_info().rss, me.num_fds(), threading.active_count()


def test_100000_tasks_through_one_pool_leak_nothing() -> None:
    batches = 10
    per_batch = TASKS // batches
    with corral.Pool(workers=2) as pool:
        assert pool.map(inc, range(per_batch)) == list(range(1, per_batch + 1))  # warm-up
        before = usage()
        for _ in range(batches):
            assert pool.map(inc, range(per_batch))[-1] == per_batch
        after = usage()
    grown = after[0] - before[0]
    print(
        f"FIGURE {batches * per_batch} tasks in one Pool: RSS +{grown / 2**20:.1f} MiB, "
        f"fds {before[1]}->{after[1]}, threads {before[2]}->{after[2]}"
    )
    assert after[1] <= before[1] and after[2] <= before[2]
    assert grown < RSS_BOUND


def test_pool_open_close_cycles_leak_nothing() -> None:
    warm = 10
    for _ in range(warm):
        with corral.Pool(workers=2) as pool:
            pool.map(inc, range(4))
    before = usage()
    for _ in range(CYCLES):
        with corral.Pool(workers=2) as pool:
            assert pool.map(inc, range(4)) == [1, 2, 3, 4]
    after = usage()
    grown = after[0] - before[0]
    print(
        f"FIGURE {CYCLES} Pool open/close cycles: RSS +{grown / 2**20:.1f} MiB, "
        f"fds {before[1]}->{after[1]}, threads {before[2]}->{after[2]}"
    )
    assert after[1] <= before[1] and after[2] <= before[2]
    assert grown < RSS_BOUND
