"""What telemetry costs: benchmark S1 (20,000 calls of f(x) = x + 1 on a warm pool of 2
workers) with ``telemetry=True`` (the default) and ``telemetry=False``, interleaved in one
process so that both see the same machine; and the worker-side meter's cost per Call.

    .venv/bin/python benchmarks/telemetry.py            # writes benchmarks/TELEMETRY.md
    .venv/bin/python benchmarks/telemetry.py --reps 11  # fewer repetitions, prints only
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import corral
from corral._batch import Batch
from corral._platform import max_rss_bytes
from corral._worker.meter import Meter

N = 20_000
HERE = Path(__file__).resolve().parent


def f(x: int) -> int:
    return x + 1


def s1(reps: int) -> tuple[list[float], list[float], int]:
    """Walls (s) of the timed map with telemetry on and off, and the Calls per map."""
    items = list(range(N))
    walls: dict[bool, list[float]] = {True: [], False: []}
    pools = {on: corral.Pool(2, telemetry=on, progress=False) for on in (True, False)}
    calls = []
    learn = Batch.learn_duration

    def counting(self: Batch, result: object) -> None:
        calls.append(1)
        learn(self, result)  # type: ignore[arg-type]

    try:
        for pool in pools.values():
            pool.map(f, range(100))
        for rep in range(reps):
            for on in (True, False) if rep % 2 else (False, True):
                start = time.perf_counter()
                out = pools[on].map(f, items)
                walls[on].append(time.perf_counter() - start)
                assert out[-1] == N
        Batch.learn_duration = counting  # type: ignore[method-assign]
        pools[True].map(f, items)
    finally:
        Batch.learn_duration = learn  # type: ignore[method-assign]
        for pool in pools.values():
            pool.close()
    return walls[True], walls[False], len(calls)


def meter_cost(n: int = 20_000) -> tuple[float, float, float]:
    """Seconds per Call: the meter for a short Call, for a Call of 5 ms or more (the exact
    peak), and what a Call measured without it (process_time twice, ru_maxrss)."""
    meter = Meter()
    best = [float("inf")] * 3
    for _ in range(5):
        for i, seconds in enumerate((0.0, 1.0)):
            start = time.perf_counter()
            for _ in range(n):
                meter.begin()
                meter.end(seconds)
            best[i] = min(best[i], (time.perf_counter() - start) / n)
        start = time.perf_counter()
        for _ in range(n):
            cpu0 = time.process_time()
            _ = time.process_time() - cpu0
            max_rss_bytes()
        best[2] = min(best[2], (time.perf_counter() - start) / n)
    meter.close()
    return best[0], best[1], best[2]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=41)
    args = parser.parse_args()
    load0 = os.getloadavg()[0]
    on, off, calls = s1(args.reps)
    short, exact, without = meter_cost()
    load1 = os.getloadavg()[0]
    med_on, med_off = statistics.median(on), statistics.median(off)
    extra = short - without
    per_worker = calls / 2 * extra
    lines = [
        "# Telemetry overhead",
        "",
        f"`benchmarks/telemetry.py --reps {args.reps}`, {time.strftime('%Y-%m-%d %H:%M')}, "
        f"CPython {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
        f"{load0:.1f} at start, {load1:.1f} at end.",
        "",
        "## S1 with telemetry on and off (interleaved, same process, warm pools of 2)",
        "",
        "| telemetry | wall median | wall min | tasks/s (median) | n |",
        "|---|---:|---:|---:|---:|",
        f"| on (default) | {med_on * 1e3:.2f} ms | {min(on) * 1e3:.2f} ms | "
        f"{N / med_on:,.0f} | {len(on)} |",
        f"| off | {med_off * 1e3:.2f} ms | {min(off) * 1e3:.2f} ms | "
        f"{N / med_off:,.0f} | {len(off)} |",
        "",
        f"Ratio on/off: median {med_on / med_off:.3f}, min {min(on) / min(off):.3f}.",
        "",
        "## The meter's cost per Call (in this process)",
        "",
        f"- a Call under 5 ms (S1's): {short * 1e6:.1f} µs, against {without * 1e6:.1f} µs "
        f"without telemetry: {extra * 1e6:.1f} µs more",
        f"- a Call of 5 ms or more (exact peak: read VmHWM, reset it): {exact * 1e6:.1f} µs, "
        f"i.e. under {exact / 0.005 * 100:.2f} % of such a Call",
        f"- S1 makes {calls} Calls ({calls / 2:.0f} per worker): {per_worker * 1e6:.0f} µs "
        f"per worker in all, {per_worker / med_off * 100:.2f} % of S1's median wall here",
        "",
        "On a loaded machine the walls drift by more than the difference; the per-Call "
        "figures bound what telemetry can cost.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.reps >= 41:
        (HERE / "TELEMETRY.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
