"""Nothing on the dispatch path is quadratic (issue 15): the Python function calls a batch
costs grow in proportion to its tasks. Counted with a profiler over the in-process (serial)
backend, which runs the same engine, batch, positions, dispatch and scheduler code on the
caller's thread, so the count is deterministic; never timed.

Complexity, for the record: with N queued tasks and W workers, handing out one Call is O(1)
amortised in N (positions are a cursor plus a requeue deque; a Result settles its items by
index), and the scheduler picks in O(log N) (heaps; see benchmarks/SCHEDULING.md for 100k
tasks x 1k locks). The process backend's wait registers every worker's pipe and sentinel
on each wait, so an event costs O(W).
"""

from __future__ import annotations

import cProfile
import pstats
from collections.abc import Callable
from typing import Any

import pytest

import corral

SMALL, LARGE = 500, 2000
SLACK = 1.5
"""Allowed growth of the calls per task between the two sizes (a quadratic path gives 4; a
linear one stays near 1: constant costs shrink per task, chunk sizes follow measured times;
imap of a generator measured 1.12)."""


def _calls(run: Callable[[corral.Pool, int], Any], n: int) -> int:
    with corral.Pool(workers=2, backend="serial") as pool:
        run(pool, 10)  # warm: functions pickled, caches filled
        profile = cProfile.Profile()
        profile.enable()
        run(pool, n)
        profile.disable()
    return int(pstats.Stats(profile).total_calls)  # type: ignore[attr-defined]


def _generator(n: int) -> Any:
    yield from range(n)


CASES: dict[str, Callable[[corral.Pool, int], Any]] = {
    "map chunksize=1": lambda pool, n: pool.map(abs, range(n), chunksize=1),
    "map auto": lambda pool, n: pool.map(abs, range(n)),
    "map with a timeout": lambda pool, n: pool.map(abs, range(n), timeout=60),
    "imap of a generator": lambda pool, n: list(pool.imap(abs, _generator(n))),
    "run with locks and dependencies": lambda pool, n: pool.run(
        [
            corral.Task(abs, (i,), key=i, locks=[f"lock{i % 100}"], after=[i - 1] if i % 7 else [])
            for i in range(n)
        ]
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_calls_grow_linearly_with_the_tasks(case):
    small, large = _calls(CASES[case], SMALL), _calls(CASES[case], LARGE)
    growth = (large / LARGE) / (small / SMALL)
    assert growth <= SLACK, f"{case}: {small} calls for {SMALL} tasks, {large} for {LARGE}"
