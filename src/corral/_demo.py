"""``corral demo``: a real batch that shows what corral does, in about five seconds.

300 small Monte-Carlo simulations in three groups of sample sizes run on all CPUs, the
largest first (``cost``), with a live progress bar per group; one is given a bad parameter
and raises, one hangs and is killed by its timeout; the rest finish, and the summary table
shows all of it, by group too. It ends by writing ``report.html`` (open it in a browser) and
``trace.json`` (open it in ui.perfetto.dev) in ``out`` (the current directory by default)
and printing their paths.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from ._api import run
from ._report.report import Report
from ._task import Task

N_TASKS = 300
BAD = 137
HANGS = 251


def estimate_pi(seed: int, samples: int) -> float:
    """A deliberately CPU-bound pure-Python Monte-Carlo estimate of pi."""
    if samples <= 0:
        raise ValueError(f"samples must be positive, got {samples}")
    if seed == HANGS:
        time.sleep(3600)  # a stuck simulation: only its timeout ends it
    rng = random.Random(seed)
    inside = sum(1 for _ in range(samples) if rng.random() ** 2 + rng.random() ** 2 <= 1.0)
    return 4.0 * inside / samples


SAMPLES = (30_000, 60_000, 90_000)


def demo(workers: int | str = "auto", out: str | os.PathLike[str] = ".") -> Report:
    tasks = []
    for seed in range(N_TASKS):
        samples = SAMPLES[seed % len(SAMPLES)]
        tasks.append(
            Task(
                estimate_pi,
                (seed, -1 if seed == BAD else samples),
                key=f"sim-{seed:03d}",
                timeout=2.0,
                group=f"{samples // 1000}k samples",
                cost=samples / 1e6,
            )
        )
    report = run(tasks, workers=workers, errors="return", progress=True)
    estimates = [r for r in report.results if isinstance(r, float)]
    print(report.summary())
    print(f"pi ~ {sum(estimates) / len(estimates):.5f} from {len(estimates)} simulations")
    html, trace = Path(out, "report.html").resolve(), Path(out, "trace.json").resolve()
    report.to_html(html)
    report.to_trace(trace)
    print(f"report: {html}  (open it in a browser)")
    print(f"trace:  {trace}  (open it in https://ui.perfetto.dev or chrome://tracing)")
    return report
