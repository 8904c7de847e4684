"""S3's copy under forkserver (issue 15): ``corral.share(existing array)`` with a forkserver
pool, against copying into ``multiprocessing.shared_memory`` by hand (the peer that pays the
same one copy), in the same run.

    .venv/bin/python benchmarks/share_copy.py --mib 1024 --reps 3 [--base OLD_SRC]

Each repetition is a fresh process: the array and a warm pool of 2 workers exist before the
clock; the clock covers sharing the array and one task per worker summing all of it (corral:
default forkserver pool, the segment is made when the handle first goes to a worker; by hand:
SharedMemory created and filled, mp.Pool fork workers attach by name). Medians; ratios
against "by hand".
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
MARK = "@@SHARE "

CHILD = r"""
import json, sys, time
import numpy as np
kind, mib = sys.argv[1], int(sys.argv[2])
a = np.ones(mib * 2**20 // 8)

def total(h):
    return float(h.value.sum())

def total_by_name(name, n):
    from multiprocessing import shared_memory
    shm = shared_memory.SharedMemory(name=name)
    s = float(np.ndarray((n,), np.float64, buffer=shm.buf).sum())
    shm.close()
    return s

if __name__ == "__main__":
    if kind == "hand":
        import multiprocessing
        from multiprocessing import shared_memory
        with multiprocessing.get_context("fork").Pool(2) as pool:
            pool.map(abs, [1, 2])
            t0 = time.perf_counter()
            shm = shared_memory.SharedMemory(create=True, size=a.nbytes)
            np.ndarray(a.shape, a.dtype, buffer=shm.buf)[:] = a
            t1 = time.perf_counter()
            sums = pool.starmap(total_by_name, [(shm.name, a.size)] * 2)
            wall = time.perf_counter() - t0
            shm.close(); shm.unlink()
    else:
        import corral
        with corral.Pool(workers=2) as pool:
            pool.map(abs, [1, 2])
            t0 = time.perf_counter()
            with corral.share(a) as h:
                sums = pool.map(total, [h, h])
            wall = time.perf_counter() - t0
            t1 = None
    assert sums == [float(a.size)] * 2
    print("@@SHARE " + json.dumps({"wall": wall}), flush=True)
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--base", type=Path, default=None, help="an older src/ folder, same run")
    args = ap.parse_args()
    rows = {"by hand": ("hand", None), "corral.share": ("corral", HERE.parent / "src")}
    if args.base is not None:
        rows["corral.share (base)"] = ("corral", args.base)
    walls: dict[str, list[float]] = {r: [] for r in rows}
    for _ in range(args.reps):
        for row, (kind, src) in rows.items():
            env = dict(os.environ)
            if src is not None:
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
            # the tasks live in the child's __main__ (read from stdin): they travel by value
            cmd = [sys.executable, "-", kind, str(args.mib)]
            out = subprocess.run(
                cmd, input=CHILD, capture_output=True, text=True, env=env, timeout=600
            )
            line = [ln for ln in out.stdout.splitlines() if ln.startswith(MARK)]
            if line:
                walls[row].append(json.loads(line[-1][len(MARK) :])["wall"])
            else:
                print(row, "failed:", out.stderr[-400:], file=sys.stderr)
    base = statistics.median(walls["by hand"]) if walls["by hand"] else None
    print(f"{args.mib} MiB, reps {args.reps}, load average at end {os.getloadavg()[0]:.2f}")
    for row, w in walls.items():
        if w:
            med = statistics.median(w)
            ratio = f", {med / base:.2f}x by hand" if base else ""
            print(f"- {row}: median {med:.3f} s (min {min(w):.3f}, max {max(w):.3f}){ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
