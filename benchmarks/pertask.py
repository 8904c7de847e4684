"""Per-task round trips (issue 15): tasks/s of trivial tasks sent one at a time, against
mp.Pool with chunksize=1 and pebble's ``schedule``, in the same run.

    .venv/bin/python benchmarks/pertask.py --n 5000 --reps 3

Rows: corral ``Pool.map(chunksize=1)``; corral ``Pool.map(timeout=60)`` (chunksize "auto": chunks
carry per-item deadlines); corral ``Executor.submit`` per task; mp.Pool ``map(chunksize=1)``;
pebble ``schedule`` (when installed). Each repetition of each row runs in a fresh process
(warm pool: created and warmed with 100 items before the clock); rows are interleaved
round-robin; medians and ratios against mp.Pool cs=1 of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MARK = "@@PERTASK "

CHILD = r"""
import sys, time, json
sys.path.insert(0, sys.argv[3])
from bench_tasks import inc
row, n = sys.argv[1], int(sys.argv[2])
items = list(range(n))
if row.startswith("corral"):
    import corral
    pool = corral.Pool(workers=2)
    pool.map(inc, range(100))
    if row == "corral-cs1":
        run = lambda: pool.map(inc, items, chunksize=1)
    elif row == "corral-timeout":
        run = lambda: pool.map(inc, items, timeout=60)
    elif row == "corral-submit":
        run = lambda: [f.result() for f in [pool.submit(inc, x) for x in items]]
elif row == "mp-cs1":
    import multiprocessing
    pool = multiprocessing.Pool(2)
    pool.map(inc, range(100))
    run = lambda: pool.map(inc, items, chunksize=1)
elif row == "pebble":
    from pebble import ProcessPool
    pool = ProcessPool(max_workers=2)
    [f.result() for f in [pool.schedule(inc, args=(x,)) for x in range(100)]]
    run = lambda: [f.result() for f in [pool.schedule(inc, args=(x,)) for x in items]]
t0 = time.perf_counter()
out = run()
wall = time.perf_counter() - t0
assert out == [x + 1 for x in items], "wrong results"
print("@@PERTASK " + json.dumps({"rate": n / wall}), flush=True)
pool.close()
"""

ROWS = ["mp-cs1", "corral-cs1", "corral-timeout", "corral-submit", "pebble"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rows", default=",".join(ROWS))
    args = ap.parse_args()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(HERE.parent / "src"), env.get("PYTHONPATH")])
    )
    rows = args.rows.split(",")
    rates: dict[str, list[float]] = {r: [] for r in rows}
    for _ in range(args.reps):
        for row in rows:
            cmd = [sys.executable, "-c", CHILD, row, str(args.n), str(HERE)]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
            line = [ln for ln in out.stdout.splitlines() if ln.startswith(MARK)]
            if line:
                rates[row].append(json.loads(line[-1][len(MARK) :])["rate"])
            else:
                print(row, "failed:", out.stderr[-300:], file=sys.stderr)
    base = statistics.median(rates["mp-cs1"]) if rates.get("mp-cs1") else None
    print(f"n={args.n}, reps={args.reps}, load average at end {os.getloadavg()[0]:.2f}")
    print("| row | tasks/s (median) | min–max | × mp.Pool cs=1 |")  # noqa: RUF001
    print("|---|---:|---:|---:|")
    for row in rows:
        r = rates[row]
        if not r:
            print(f"| {row} | failed | | |")
            continue
        med = statistics.median(r)
        ratio = f"{med / base:.2f}" if base else "—"
        print(f"| {row} | {med:,.0f} | {min(r):,.0f}–{max(r):,.0f} | {ratio} |")  # noqa: RUF001
    return 0


if __name__ == "__main__":
    sys.exit(main())
