"""S1 and S2 on a Dask cluster: corral's dask backend against plain ``client.map``.

One ``distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=1)`` serves
both contenders, in the same run, repetitions alternating (so drift of a shared machine falls
on both):

- ``dask client.map``: ``client.map(fn, items, pure=False)`` then ``client.gather``: one Dask
  task per item, run in the Dask worker's thread.
- ``corral dask``: ``pool.map(fn, items)`` on a warm ``corral.Pool(backend="dask",
  dask_client=client)`` (warmed with a 100-item map before the clock starts): corral chunks
  the items into Calls, each one Dask task run in a corral child process of the Dask worker.

S1: 20,000 calls of ``inc``; S2: 100 calls of ``burn`` of ~40 ms each (``bench_tasks``).
Reported: median wall time over the repetitions (min-max), and corral's overhead per task
against ``client.map`` = (corral - client.map) / tasks (negative: corral is faster).
Every result is checked against serial calls.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_dask.py [--reps 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import distributed
from bench_tasks import burn, calibrate_burn, inc, s2_items

import corral


def timed(run: Callable[[], list[Any]], expected: list[Any]) -> float:
    start = time.perf_counter()
    out = run()
    wall = time.perf_counter() - start
    if out != expected:
        raise AssertionError("wrong results")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--s1", type=int, default=20_000)
    args = parser.parse_args()

    n_turns, burn_s = calibrate_burn(0.040)
    s1 = list(range(args.s1))
    s2 = s2_items(n_turns, 100)
    scenarios = {
        "S1": (inc, s1, [inc(x) for x in s1]),
        "S2": (burn, s2, [burn(x) for x in s2]),
    }
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
        corral.Pool(backend="dask", dask_client=client) as pool,
    ):
        pool.map(inc, range(100))  # warm: the children under the Dask workers are up
        client.gather(client.map(inc, range(100), pure=False))
        walls: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.reps):
            for name, (fn, items, expected) in scenarios.items():
                runs = {
                    "dask client.map": lambda fn=fn, items=items: client.gather(
                        client.map(fn, items, pure=False)
                    ),
                    "corral dask": lambda fn=fn, items=items: pool.map(fn, items),
                }
                for who, run in runs.items():
                    wall = timed(run, expected)
                    walls.setdefault((name, who), []).append(wall)
                    print(f"  {name} {who}: {wall:.3f} s", file=sys.stderr, flush=True)
    print(f"LocalCluster(processes=True, n_workers=2, threads_per_worker=1); cpus={os.cpu_count()}")
    print(
        f"load average {os.getloadavg()[0]:.1f}; S2 burn ~{burn_s * 1000:.0f} ms; reps={args.reps}"
    )
    print("| scenario | contender | wall median (min-max) | per task |")
    print("|---|---|---|---|")
    for (name, who), values in walls.items():
        med = statistics.median(values)
        n = len(scenarios[name][1])
        print(
            f"| {name} | {who} | {med:.3f} s ({min(values):.3f}-{max(values):.3f}) "
            f"| {med / n * 1e3:.3f} ms |"
        )
    for name, (_, items, _) in scenarios.items():
        ours = statistics.median(walls[(name, "corral dask")])
        theirs = statistics.median(walls[(name, "dask client.map")])
        print(
            f"{name}: corral overhead vs client.map = {(ours - theirs) / len(items) * 1e3:+.3f} "
            f"ms per task (ratio {ours / theirs:.2f})"
        )


if __name__ == "__main__":
    main()
