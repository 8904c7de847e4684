"""Task functions the benchmark sends to worker processes.

They live in their own small module (not in ``run.py``) so that every library pickles them by
reference and every start method (fork, forkserver, spawn, loky) imports the same code: the
driver puts this folder on ``PYTHONPATH`` for each repetition's process and its children.
"""

from __future__ import annotations

import time

ITEM_SCALE = 1000
"""An S2 item is ``n * ITEM_SCALE + i``: ``n`` loop turns, ``i`` makes every item different
(so that nothing can cache or de-duplicate equal calls) without changing the work."""


def inc(x: int) -> int:
    """S1/S4: the trivial task."""
    return x + 1


def burn(item: int) -> int:
    """S2: pure-Python CPU work, ``item // ITEM_SCALE`` loop turns; the result depends on
    ``item``, so a wrong or mixed-up result is detectable."""
    acc = item
    for k in range(item // ITEM_SCALE):
        acc = (acc * 31 + k) & 0xFFFFFFFF
    return acc


def s2_items(n_turns: int, count: int) -> list[int]:
    return [n_turns * ITEM_SCALE + i for i in range(count)]


def time_burn(n_turns: int, repeat: int = 5) -> float:
    """Median seconds of ``burn`` with ``n_turns`` turns, in this process."""
    times = []
    for i in range(repeat):
        t0 = time.perf_counter()
        burn(n_turns * ITEM_SCALE + i)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def calibrate_burn(target_s: float) -> tuple[int, float]:
    """Loop turns for one ``burn`` call of about ``target_s`` here; and the time measured."""
    n = 50_000
    while time_burn(n, repeat=1) < 0.01:
        n *= 2
    for _ in range(3):
        n = max(1, round(n * target_s / time_burn(n)))
    return n, time_burn(n, repeat=7)


def sleep_ms(ms: float) -> float:
    """Sleep ``ms`` milliseconds (benchmarks/scale.py, S8: workers that wait, not compute)."""
    time.sleep(ms / 1000)
    return ms
