"""Scheduling benchmarks: the climate-normals batch against its lower bound, and the
scheduler's own cost.

    .venv/bin/python benchmarks/scheduling.py                # everything, writes SCHEDULING.md
    .venv/bin/python benchmarks/scheduling.py --quick        # smaller, prints only
    .venv/bin/python benchmarks/scheduling.py --part climate --workers 2,4,16

**Climate** (C1): 4 variables x 65 yearly NetCDF files, every file holding all 4 variables:
one task per (variable, year), locked on its file (two tasks never read one file at once),
durations drawn from a fixed seed; then per variable, 30-year window means (windows every 5
years) that depend on the 30 per-file tasks of their window. Task bodies sleep, so 16 workers
are meaningful on 2 cores. Makespan (first start to last finish, from the outcomes) against the
lower bound ``max(total work / workers, longest dependency chain, busiest lock's serial work)``,
for corral and for what people write by hand without a scheduler: for each variable, a
``ProcessPoolExecutor.map`` over its files (one variable at a time, so no file is read twice at
once), then its windows.

**Scheduler cost** (C2): 100,000 tasks over 1,000 distinct locks. (a) The ``Scheduler`` alone,
driven by a simulation of 16 workers (CPU per task of ``plan`` and of pick/finished); locks
assigned round-robin (task i -> lock i % 1000) and in blocks (100 consecutive tasks share a
lock, so most ready tasks wait on a held lock). (b) A real ``corral.run`` of 100,000 trivial
tasks with those locks on 2 workers: the coordinator process's CPU time per task (engine
thread, pickling, pipes and scheduler together), against the same tasks with only ``cost=``
declared (the scheduled path without locks) and against a plain ``corral.map``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import heapq
import itertools
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import corral  # noqa: E402
from corral._needs import make_needs, plan  # noqa: E402
from corral._options import RunOptions  # noqa: E402
from corral._scheduler import Scheduler  # noqa: E402

VARIABLES = ("tas", "pr", "tasmax", "tasmin")
YEARS = range(1951, 2016)  # 65 yearly files
WINDOW, STEP = 30, 5
SEED = 20261123


def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def nothing(_: Any = None) -> None:
    return None


# -- C1: climate normals ---------------------------------------------------------------------------
def climate_batch(scale: float) -> tuple[list[corral.Task], dict[Any, float]]:
    rng = random.Random(SEED)
    tasks, work = [], {}
    for var in VARIABLES:
        for year in YEARS:
            key = (var, year)
            work[key] = round(scale * rng.uniform(0.1, 0.4), 4)
            tasks.append(
                corral.Task(
                    sleep_for, (work[key],), key=key, locks=[f"file:{year}.nc"],
                    cost=work[key], group=var,
                )
            )  # fmt: skip
    for var in VARIABLES:
        for start in range(YEARS.start, YEARS.stop - WINDOW + 1, STEP):
            key = (var, f"{start}-{start + WINDOW - 1}")
            work[key] = round(scale * rng.uniform(0.3, 0.6), 4)
            after = [(var, y) for y in range(start, start + WINDOW)]
            tasks.append(
                corral.Task(
                    sleep_for, (work[key],), key=key, after=after, cost=work[key], group=var
                )
            )
    return tasks, work


def lower_bound(tasks: list[corral.Task], work: dict[Any, float], workers: int) -> dict[str, float]:
    total = sum(work.values())
    chain: dict[Any, float] = {}
    for task in tasks:  # dependencies come first in this batch
        chain[task.key] = work[task.key] + max((chain[d] for d in task.after), default=0.0)
    per_lock: dict[str, float] = {}
    for task in tasks:
        for name in task.locks:
            per_lock[name] = per_lock.get(name, 0.0) + work[task.key]
    parts = {
        "work/workers": total / workers,
        "chain": max(chain.values()),
        "busiest lock": max(per_lock.values()),
    }
    return {**parts, "bound": max(parts.values())}


def run_corral(tasks: list[corral.Task], workers: int, warm: bool) -> dict[str, float]:
    """Makespan from the outcomes. ``warm``: on a Pool whose workers have all run a task
    already, so the makespan is the schedule's alone; cold: ``corral.run`` as it comes,
    workers starting (one after another on 2 cores) while the first tasks run."""
    started = time.perf_counter()
    if warm:
        with corral.Pool(workers=workers) as pool:
            pool.map(sleep_for, [0.05] * (2 * workers), chunksize=1)
            report = pool.run(tasks)
    else:
        report = corral.run(tasks, workers=workers)
    wall = time.perf_counter() - started
    first = min(o.started for o in report.outcomes if o.started is not None)
    last = max(o.finished for o in report.outcomes if o.finished is not None)
    check_locks(report, tasks)
    return {"makespan": last - first, "wall": wall}


def check_locks(report: corral.Report, tasks: list[corral.Task]) -> None:
    by_lock: dict[str, list[tuple[float, float]]] = {}
    for task, o in zip(tasks, report.outcomes, strict=True):
        for name in task.locks:
            by_lock.setdefault(name, []).append((o.started, o.finished))
    for name, spans in by_lock.items():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert end <= start, f"{name} held twice"


def run_by_hand(tasks: list[corral.Task], workers: int) -> dict[str, float]:
    """Without a scheduler: one variable at a time (its files are distinct, so no file is read
    twice at once), then that variable's windows; a barrier after each map."""
    started = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        list(pool.map(sleep_for, [0.05] * (2 * workers)))  # warm, as for corral
        t0 = time.perf_counter()
        for var in VARIABLES:
            files = [t.args[0] for t in tasks if t.key[0] == var and not t.after]
            windows = [t.args[0] for t in tasks if t.key[0] == var and t.after]
            list(pool.map(sleep_for, files))
            list(pool.map(sleep_for, windows))
        makespan = time.perf_counter() - t0
    return {"makespan": makespan, "wall": time.perf_counter() - started}


def climate(workers_list: list[int], scale: float, reps: int) -> list[dict[str, Any]]:
    tasks, work = climate_batch(scale)
    rows = []
    for workers in workers_list:
        bound = lower_bound(tasks, work, workers)
        corral_runs = [run_corral(tasks, workers, warm=True) for _ in range(reps)]
        hand_runs = [run_by_hand(tasks, workers) for _ in range(reps)]
        cold = run_corral(tasks, workers, warm=False)
        row = {
            "workers": workers,
            **{k: round(v, 3) for k, v in bound.items()},
            "corral": sorted(r["makespan"] for r in corral_runs),
            "cold": cold["makespan"],
            "cold_wall": cold["wall"],
            "by_hand": sorted(r["makespan"] for r in hand_runs),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


# -- C2: the scheduler's own cost ------------------------------------------------------------------
def pure_scheduler_cost(n: int, locks: int, blocks: bool, workers: int = 16) -> dict[str, float]:
    def lock_of(i: int) -> str:
        return f"L{i // (n // locks)}" if blocks else f"L{i % locks}"

    needs = [make_needs(locks=[lock_of(i)]) for i in range(n)]
    t0 = time.process_time()
    the_plan = plan(range(n), needs, RunOptions())
    t1 = time.process_time()
    assert the_plan is not None
    sched = Scheduler(the_plan)
    running: list[tuple[int, int]] = []
    rng = random.Random(SEED)
    clock = done = 0
    t2 = time.process_time()
    while done < n:
        while len(running) < workers:
            pos = sched.pick()
            if pos is None:
                break
            heapq.heappush(running, (clock + rng.randint(1, 100), pos))
        clock, pos = heapq.heappop(running)
        sched.finished(pos, True)
        done += 1
    t3 = time.process_time()
    assert sched.idle()
    return {"plan_us": (t1 - t0) / n * 1e6, "schedule_us": (t3 - t2) / n * 1e6}


def real_run_cost(n: int, locks: int, kind: str) -> dict[str, float]:
    """Coordinator CPU per task, measured in a fresh process so nothing else is counted."""
    code = f"""
import sys, time, json, os
sys.path.insert(0, {str(HERE.parent / 'src')!r}); sys.path.insert(0, {str(HERE)!r})
import corral
from scheduling import nothing
n, locks, kind = {n}, {locks}, {kind!r}
with corral.Pool(workers=2) as pool:
    pool.map(nothing, range(200))
    if kind == "locks":
        tasks = [corral.Task(nothing, (i,), locks=[f"L{{i % locks}}"]) for i in range(n)]
    elif kind == "cost":
        tasks = [corral.Task(nothing, (i,), cost=1.0) for i in range(n)]
    c0, w0 = time.process_time(), time.perf_counter()
    if kind == "map":
        pool.map(nothing, range(n))
    else:
        pool.run(tasks)
    c1, w1 = time.process_time(), time.perf_counter()
print(json.dumps({{"cpu_us": (c1 - c0) / n * 1e6, "tasks_per_s": n / (w1 - w0)}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=HERE
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def scheduler_cost(n: int, locks: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for blocks in (False, True):
        runs = [pure_scheduler_cost(n, locks, blocks) for _ in range(3)]
        name = "blocks" if blocks else "round-robin"
        result[f"pure {name}"] = min(runs, key=lambda r: r["schedule_us"])
        print(name, json.dumps(result[f"pure {name}"]), flush=True)
    for kind in ("locks", "cost", "map"):
        runs = [real_run_cost(n, locks, kind) for _ in range(3)]
        result[f"real {kind}"] = sorted(runs, key=lambda r: r["cpu_us"])[1]
        print(kind, json.dumps(result[f"real {kind}"]), flush=True)
    return result


# -- report --------------------------------------------------------------------------------
def write_report(rows: list[dict[str, Any]], cost: dict[str, Any], path: Path) -> None:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
    ).stdout.strip()
    out = [
        "# Scheduling benchmarks",
        "",
        f"Generated by `benchmarks/scheduling.py` at commit {commit} on {platform.node()} "
        f"({os.cpu_count()} CPUs, Python {platform.python_version()}), "
        f"{time.strftime('%Y-%m-%d %H:%M')}. Method: the script's docstring.",
        "",
        "## C1: climate normals, makespan against the lower bound",
        "",
        "4 variables x 65 files (one task per variable and file, locked on the file) + 32 window",
        "tasks (each after its 30 files). Seconds; median (min-max) over repetitions. Warm: on a",
        "Pool whose workers are all up (the schedule alone). Cold: `corral.run` from nothing,",
        "where the first tasks start while the other workers are still starting (the makespan",
        "counts that ramp; the wall time also counts the pool's start and stop).",
        "",
        "| workers | lower bound | (work/workers, chain, busiest lock) | corral, warm | "
        "warm / bound | corral, cold | cold / bound | cold wall | by hand (per-variable maps) "
        "| by hand / bound |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        med = r["corral"][len(r["corral"]) // 2]
        hand = r["by_hand"][len(r["by_hand"]) // 2]
        out.append(
            f"| {r['workers']} | {r['bound']:.2f} | {r['work/workers']:.2f}, {r['chain']:.2f}, "
            f"{r['busiest lock']:.2f} | {med:.2f} ({min(r['corral']):.2f}-{max(r['corral']):.2f})"
            f" | **{med / r['bound']:.3f}** | {r['cold']:.2f} | {r['cold'] / r['bound']:.3f} "
            f"| {r['cold_wall']:.2f} | {hand:.2f} | {hand / r['bound']:.3f} |"
        )
    out += [
        "",
        "Target: corral within 5% of the lower bound (ratio <= 1.05).",
        "",
        "## C2: the scheduler's own cost, 100,000 tasks over 1,000 locks",
        "",
        "| measure | per task |",
        "|---|---:|",
    ]
    for name in ("pure round-robin", "pure blocks"):
        c = cost[name]
        out.append(f"| Scheduler alone, locks {name[5:]}: pick + finished | "
                   f"{c['schedule_us']:.1f} µs (plan/validation {c['plan_us']:.1f} µs) |")
    for kind, label in (
        ("locks", "real run with locks: coordinator CPU"),
        ("cost", "real run, cost= only (scheduled path, no locks): coordinator CPU"),
        ("map", "plain corral.map (chunked): coordinator CPU"),
    ):
        c = cost[f"real {kind}"]
        out.append(f"| {label} | {c['cpu_us']:.1f} µs ({c['tasks_per_s']:,.0f} tasks/s) |")
    out += ["", "Target: <= 50 µs per task.", ""]
    path.write_text("\n".join(out) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=("all", "climate", "cost"), default="all")
    parser.add_argument("--workers", default="2,4,16")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="task durations x scale")
    parser.add_argument("--out", default=str(HERE / "SCHEDULING.md"))
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    scale, reps, n = args.scale, args.reps, 100_000
    if args.quick:
        scale, reps, n = scale * 0.2, 1, 20_000
    rows = climate(workers, scale, reps) if args.part in ("all", "climate") else []
    cost = scheduler_cost(n, 1000) if args.part in ("all", "cost") else {}
    if args.part == "all" and not args.quick:
        write_report(rows, cost, Path(args.out))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
