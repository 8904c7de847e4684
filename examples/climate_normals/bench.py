"""Benchmark: makespan of corral's schedule against the planned "one worker per variable"
design (and the serial script), on real NetCDF at 2 and 4 workers, and with sleep-scaled
tasks of the same shape at 2, 4 and 16 workers (meaningful on a 2-core machine, as
benchmarks/SCHEDULING.md does).

    python bench.py --grid 8 16 --results ../../benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import corral

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import make_data as generate  # noqa: E402
import normals  # noqa: E402

FILE_S, PR_FILE_S, NORMAL_S = 0.05, 0.08, 0.25  # sleep-scaled costs (pr reads more)


def nap(seconds: float) -> None:
    time.sleep(seconds)


def sleep_tasks(years: int, window: int) -> list[corral.Task]:
    """The same batch with sleeping bodies: its locks, dependencies and groups."""
    batch = []
    for task in normals.tasks(Path("data"), Path("out"), years, window):
        if task.key[1] == "normal":
            seconds = NORMAL_S
        else:
            seconds = PR_FILE_S if task.key[0] == "pr" else FILE_S
        batch.append(
            corral.Task(
                nap, (seconds,), key=task.key, locks=task.locks, after=task.after,
                group=task.group, cost=seconds,
            )
        )  # fmt: skip
    return batch


def per_variable_sleep(var: str, years: int, window: int) -> None:
    for task in sleep_tasks(years, window):
        if task.key[0] == var:
            task.fn(*task.args)


def timed(fn: object, *args: object, **kwargs: object) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--years", type=int, default=generate.YEARS)
    parser.add_argument("--window", type=int, default=normals.WINDOW)
    parser.add_argument("--grid", type=int, nargs=2, default=(8, 16))
    parser.add_argument("--folder", type=Path, help="keep the generated data here")
    parser.add_argument("--results", type=Path, help="append the Markdown tables to this file")
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="climate-bench-"))
    data = folder / "data"
    generate.generate(data, args.years, tuple(args.grid))
    years, window = args.years, args.window
    rows = []
    out = folder / "serial"
    serial = timed(normals.run_serial, data, out, years, window)
    for workers in (2, 4):
        a, b = folder / f"corral{workers}", folder / f"pervar{workers}"
        ours = timed(normals.run_corral, data, a, years, window, workers=workers, progress=False)
        theirs = timed(normals.run_per_variable, data, b, years, window, workers=workers)
        assert normals.same_outputs(a, out) and normals.same_outputs(b, out), "outputs differ"
        rows.append(
            f"| real NetCDF | {workers} | {serial:.1f} | {theirs:.1f} | {ours:.1f} "
            f"| {serial / ours:.2f} | {theirs / ours:.2f} |"
        )
        shutil.rmtree(a)
        shutil.rmtree(b)
    from concurrent.futures import ProcessPoolExecutor

    tasks = sleep_tasks(years, window)
    work = sum(t.args[0] for t in tasks)
    for workers in (2, 4, 16):
        start = time.perf_counter()
        corral.run(tasks, workers=workers, progress=False)
        ours = time.perf_counter() - start
        start = time.perf_counter()
        with ProcessPoolExecutor(max_workers=min(workers, 4)) as executor:
            jobs = [
                executor.submit(per_variable_sleep, v, years, window) for v in generate.VARIABLES
            ]
            for job in jobs:
                job.result()
        theirs = time.perf_counter() - start
        rows.append(
            f"| sleep-scaled | {workers} | {work:.1f} | {theirs:.1f} | {ours:.1f} "
            f"| {work / ours:.2f} | {theirs / ours:.2f} |"
        )
    n_tasks = len(tasks)
    text = (
        f"\n{platform.node()}, {time.strftime('%Y-%m-%d %H:%M')}, Python "
        f"{platform.python_version()}: climate_normals, {len(generate.VARIABLES)} variables x "
        f"{years} years ({n_tasks} tasks), grid {args.grid[0]}x{args.grid[1]}, window {window}. "
        "Wall seconds including pool start; sleep-scaled 'serial' is the sum of the sleeps.\n\n"
        "| tasks | workers | serial | one worker per variable | corral | corral vs serial "
        "| corral vs per variable |\n|---|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n"
    )
    print(text)
    if args.results:
        with open(args.results, "a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
