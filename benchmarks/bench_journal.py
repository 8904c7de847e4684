"""The journal's cost: S1 with and without ``journal=``, a 1,000,000-task resume, size per task.

    .venv/bin/python benchmarks/bench_journal.py             # S1 x5 each way, 1M resume
    .venv/bin/python benchmarks/bench_journal.py --quick     # smaller, for a smoke run

S1 is the dispatch benchmark of ``run.py`` (20,000 calls of ``f(x) = x + 1`` on a warm Pool
of 2 workers): both rows run in this process, interleaved, each journaled repetition on a
new journal file (nothing to resume), so the ratio is the journal's whole cost: digests of
the inputs, the writer's pickling and commits, and the final flush. The resume is
``corral.map`` of ``inc`` over 1,000,001 items with a journal that holds the first
1,000,000: from the call to the return, i.e. reading what is done, giving it as cached, and
running the one new task (pool start-up included).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from bench_tasks import inc, time_burn  # noqa: E402

import corral  # noqa: E402

QUIET_BURN = (639_289, 0.0393)
"""S2's calibration on this VM when quiet (benchmarks/RESULTS.md): 639,289 turns of ``burn``
took 39.3 ms. Timing the same turns around a measurement gives how much slower this process
ran then (other work on the machine), to state the figure for a quiet machine too."""


def slowdown() -> float:
    turns, quiet = QUIET_BURN
    return time_burn(turns, repeat=3) / quiet


def s1(reps: int, n: int) -> dict[str, list[float]]:
    walls: dict[str, list[float]] = {"plain": [], "journal": [], "cpu plain": [],
                                     "cpu journal": []}  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        for rep in range(reps):
            for kind in ("plain", "journal"):
                options = {"journal": Path(folder, f"s1-{rep}.corral")} if kind == "journal" else {}
                with corral.Pool(2, **options) as pool:
                    pool.map(inc, range(100))  # warm
                    t, cpu = time.perf_counter(), time.process_time()
                    out = pool.map(inc, range(n))
                    walls[kind].append(time.perf_counter() - t)
                    # the coordinator's CPU (all its threads: the writer's too), which the
                    # machine's load inflates far less than the wall time
                    walls["cpu " + kind].append(time.process_time() - cpu)
                assert out == [x + 1 for x in range(n)]
    return walls


def resume(n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "big.corral")
        t = time.perf_counter()
        corral.map(inc, range(n), journal=path, workers=2)
        first = time.perf_counter() - t
        size = path.stat().st_size
        before = slowdown()
        t = time.perf_counter()
        out = corral.map(inc, range(n + 1), journal=path, workers=2)
        again = time.perf_counter() - t
        factor = (before + slowdown()) / 2
        assert out[-1] == n + 1 and out[0] == 1
        view_t = time.perf_counter()
        view = corral.open_journal(path)
        counts = view.counts
        view_s = time.perf_counter() - view_t
        assert counts["ok"] == n + 1
    return {"first": first, "resume": again, "size": size, "open_journal": view_s,
            "slowdown": factor}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--s1-reps", type=int, help="S1 repetitions each way (default 5)")
    parser.add_argument("--s1-only", action="store_true", help="skip the 1M resume")
    args = parser.parse_args()
    reps, n, big = (2, 5000, 50_000) if args.quick else (5, 20_000, 1_000_000)
    reps = args.s1_reps or reps
    walls = s1(reps, n)
    plain, journal = statistics.median(walls["plain"]), statistics.median(walls["journal"])
    print(f"S1 {n} tasks, {reps} reps (median): plain {plain * 1e3:.2f} ms "
          f"[{min(walls['plain']) * 1e3:.2f}-{max(walls['plain']) * 1e3:.2f}], journal "
          f"{journal * 1e3:.2f} ms [{min(walls['journal']) * 1e3:.2f}-"
          f"{max(walls['journal']) * 1e3:.2f}]; journal/plain = {journal / plain:.2f}x "
          f"(+{(journal - plain) * 1e3:.2f} ms, "
          f"{(journal - plain) / n * 1e6:.2f} us/task)")  # fmt: skip
    cpu_plain = statistics.median(walls["cpu plain"])
    cpu_journal = statistics.median(walls["cpu journal"])
    print(f"S1 coordinator CPU (median): plain {cpu_plain * 1e3:.2f} ms, journal "
          f"{cpu_journal * 1e3:.2f} ms: +{(cpu_journal - cpu_plain) * 1e3:.2f} ms "
          f"({(cpu_journal - cpu_plain) / n * 1e6:.2f} us/task)")  # fmt: skip
    if args.s1_only:
        return
    r = resume(big)
    print(f"{big} tasks: first run {r['first']:.1f} s; resume of all + 1 new {r['resume']:.2f} s "
          f"(this process ran {r['slowdown']:.1f}x slower than on the quiet VM: "
          f"{r['resume'] / r['slowdown']:.2f} s quiet-equivalent); "
          f"open_journal {r['open_journal']:.2f} s; size {r['size'] / 1e6:.1f} MB = "
          f"{r['size'] / big:.1f} B/task; load {os.getloadavg()[0]:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
