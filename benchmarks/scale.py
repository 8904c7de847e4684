"""Scale (issue 15): S6, a 1,000,000-item generator through ``corral.imap``; S8, 64 workers
on this 2-core machine running sleeping tasks, against 2 workers.

    .venv/bin/python benchmarks/scale.py --reps 3

S6: the coordinator's peak RSS (``ru_maxrss`` of a fresh process) and the throughput of
``imap`` over a generator of N items against ``map`` over a list of the same N items (the
list itself counts in the second one's RSS). Target: RSS < 200 MiB, throughput within 20 %.

S8: ``Pool.map(sleep_ms, [ms] * n, chunksize=1)`` on a warm pool of W workers. Dispatch
overhead per task = (wall - ideal) / n, ideal = n * ms / W (the sleeping itself); coordinator
CPU per task = the coordinator's CPU time (all its threads) over the batch / n. Target: with 64
workers, both within 2x of 2 workers. Each repetition in a fresh process; medians.
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
MARK = "@@SCALE "

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[3])
from bench_tasks import inc, sleep_ms
import corral
kind, n = sys.argv[1], int(sys.argv[2])

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

if kind in ("gen", "list"):
    with corral.Pool(workers=2) as pool:
        pool.map(inc, range(100))
        t0 = time.perf_counter()
        if kind == "gen":
            total = sum(pool.imap(inc, (i for i in range(n))))
        else:
            total = sum(pool.map(inc, list(range(n))))
        wall = time.perf_counter() - t0
    assert total == n * (n + 1) // 2
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print("@@SCALE " + json.dumps({"rate": n / wall, "rss_mib": rss / 2**20}), flush=True)
else:
    workers, ms = int(kind), float(sys.argv[4])
    with corral.Pool(workers=workers) as pool:
        pool.map(sleep_ms, [0.0] * workers * 2, chunksize=1)  # every worker started and warm
        c0, t0 = cpu(), time.perf_counter()
        pool.map(sleep_ms, [ms] * n, chunksize=1)
        wall, used = time.perf_counter() - t0, cpu() - c0
    ideal = n * ms / 1000 / workers
    print("@@SCALE " + json.dumps({"overhead_ms": (wall - ideal) / n * 1e3,
                                   "cpu_ms": used / n * 1e3, "wall": wall}), flush=True)
"""


def run(args: list[str]) -> dict[str, float] | None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(HERE.parent / "src"), env.get("PYTHONPATH")])
    )
    out = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True,
                         env=env, timeout=600)  # fmt: skip
    line = [ln for ln in out.stdout.splitlines() if ln.startswith(MARK)]
    if not line:
        print(args, "failed:", out.stderr[-500:], file=sys.stderr)
        return None
    result: dict[str, float] = json.loads(line[-1][len(MARK) :])
    return result


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n6", type=int, default=1_000_000)
    ap.add_argument("--n8", type=int, default=640)
    ap.add_argument("--ms", type=float, default=20.0)
    args = ap.parse_args()
    rows = {
        "S6 imap(generator)": ["gen", str(args.n6), str(HERE)],
        "S6 map(list)": ["list", str(args.n6), str(HERE)],
        "S8 2 workers": ["2", str(args.n8), str(HERE), str(args.ms)],
        "S8 64 workers": ["64", str(args.n8), str(HERE), str(args.ms)],
    }
    data: dict[str, list[dict[str, float]]] = {r: [] for r in rows}
    for _ in range(args.reps):
        for row, a in rows.items():
            result = run(a)
            if result is not None:
                data[row].append(result)
    print(f"reps {args.reps}; load average at end {os.getloadavg()[0]:.2f}; medians")
    for row, results in data.items():
        keys = sorted({k for r in results for k in r})
        cells = ", ".join(f"{k} {statistics.median(r[k] for r in results):,.3f}" for k in keys)
        print(f"- {row}: {cells} (n={len(results)})")
    print(json.dumps(data), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
