"""What log forwarding and output capture cost on an S1-like run (20,000 trivial tasks).

    PYTHONPATH=src .venv/bin/python benchmarks/bench_observability.py [--n 20000] [--reps 5]

Each configuration runs ``corral.map`` on a fresh 2-worker Pool (start-up included, as S1),
repetitions interleaved round-robin so drift spreads over all of them; medians and ratios to
the default (forwarding on, capture off) are printed.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import corral


def trivial(x):
    return x + 1


def logs_once(x):
    logging.getLogger("bench.task").info("task %d", x)
    return x + 1


CONFIGS = {
    "default (forward_logging on)": (trivial, {}),
    "forward_logging=False": (trivial, {"forward_logging": False}),
    "capture_output=True": (trivial, {"capture_output": True}),
    "1 INFO record/task, dropped by level": (logs_once, {}),
    "1 INFO record/task, forwarded": (logs_once, {"_info": True}),
}


def one(fn, options, n):
    info = options.pop("_info", False)
    logger = logging.getLogger("bench.task")
    logger.setLevel(logging.INFO if info else logging.WARNING)
    logger.propagate = False
    logger.handlers = [logging.NullHandler()]
    started = time.perf_counter()
    with corral.Pool(2, progress=False, **options) as pool:
        out = pool.map(fn, range(n))
    wall = time.perf_counter() - started
    assert out[-1] == n
    if info:
        options["_info"] = True
    return wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    walls: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for _ in range(args.reps):
        for name, (fn, options) in CONFIGS.items():
            walls[name].append(one(fn, dict(options), args.n))
    base = statistics.median(walls["default (forward_logging on)"])
    print(f"{args.n} tasks, 2 workers, {args.reps} reps (median, min-max, ratio to default)")
    for name, values in walls.items():
        med = statistics.median(values)
        spread = f"({min(values):.3f}-{max(values):.3f})"
        print(f"  {name:40s} {med:7.3f} s  {spread}  {med / base:5.2f}x")


if __name__ == "__main__":
    main()
