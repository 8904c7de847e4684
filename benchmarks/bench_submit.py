"""Per-task ``submit`` throughput: ``Executor.submit`` + ``result`` for N trivial tasks.

One task at a time is how joblib backends and ``as_completed`` users drive an executor, so the
cost that matters is the caller-side path of one ``submit`` and the round trip of one small
task, not a batch's chunking. Every contender gets 2 workers and the same trivial function
(``bench_tasks.inc``); each is warmed (its workers up, the function known) before its clock
starts. Two patterns are timed:

- ``flood``: submit all N, then wait for all (``concurrent.futures.wait``);
- ``submit``: the caller-side cost alone, the time for the N ``submit`` calls of ``flood``.

Contenders run interleaved round-robin (``--reps`` rounds), in this one process, so that the
machine's drift spreads over all of them; the table gives the best and the median round, in
tasks per second, and each one's ratio to corral.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_submit.py            # N = 20,000
    PYTHONPATH=src .venv/bin/python benchmarks/bench_submit.py -n 2000 --reps 2
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench_tasks import inc

WORKERS = 2
Submit = Callable[..., Any]


@contextlib.contextmanager
def corral_executor() -> Iterator[Submit]:
    import corral

    with corral.Executor(max_workers=WORKERS) as ex:
        yield ex.submit


@contextlib.contextmanager
def cf_executor() -> Iterator[Submit]:
    with futures.ProcessPoolExecutor(max_workers=WORKERS) as ex:
        yield ex.submit


@contextlib.contextmanager
def loky_executor() -> Iterator[Submit]:
    import loky

    ex = loky.ProcessPoolExecutor(max_workers=WORKERS)
    try:
        yield ex.submit
    finally:
        ex.shutdown(wait=True)


@contextlib.contextmanager
def pebble_pool() -> Iterator[Submit]:
    import pebble

    with pebble.ProcessPool(max_workers=WORKERS) as pool:
        yield lambda fn, *args: pool.schedule(fn, args=args)


CONTENDERS: dict[str, Callable[[], contextlib.AbstractContextManager[Submit]]] = {
    "corral.Executor": corral_executor,
    "ProcessPoolExecutor": cf_executor,
    "loky": loky_executor,
    "pebble.schedule": pebble_pool,
}


def one_round(submit: Submit, n: int) -> tuple[float, float]:
    """(seconds for all of it, seconds spent in submit) for n tasks."""
    start = time.perf_counter()
    fs = [submit(inc, i) for i in range(n)]
    submitted = time.perf_counter()
    futures.wait(fs)
    end = time.perf_counter()
    assert [f.result() for f in fs] == [i + 1 for i in range(n)]
    return end - start, submitted - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20_000, help="tasks per round")
    parser.add_argument("--reps", type=int, default=3, help="rounds per contender")
    parser.add_argument("--only", default="", help="comma-separated contender names")
    args = parser.parse_args()
    names = [c for c in CONTENDERS if not args.only or c in args.only.split(",")]
    totals: dict[str, list[float]] = {name: [] for name in names}
    submits: dict[str, list[float]] = {name: [] for name in names}
    with contextlib.ExitStack() as stack:
        pools = {name: stack.enter_context(CONTENDERS[name]()) for name in names}
        for submit in pools.values():  # warm: workers up, the function known
            futures.wait([submit(inc, i) for i in range(200)])
        for _ in range(args.reps):
            for name in names:
                total, sub = one_round(pools[name], args.n)
                totals[name].append(total)
                submits[name].append(sub)
    ref = min(totals.get("corral.Executor", [0.0]) or [0.0])
    print(f"{args.n} trivial tasks, {WORKERS} workers, {args.reps} rounds (tasks/s; best, median)")
    print(f"{'contender':22} {'best':>9} {'median':>9} {'submit µs':>10} {'vs corral':>9}")
    for name in names:
        best = min(totals[name])
        med = statistics.median(totals[name])
        per_submit = min(submits[name]) / args.n * 1e6
        ratio = f"{ref / best:.2f}x" if ref else "-"
        print(f"{name:22} {args.n / best:9.0f} {args.n / med:9.0f} {per_submit:10.1f} {ratio:>9}")


if __name__ == "__main__":
    main()
