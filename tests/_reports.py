"""Large Reports for the exports' size tests, built from corral's own record types.

Running 100,000 real tasks takes most of a minute on a loaded 2-core machine; what the
exporters read is the Report's Outcomes and Attempts, so the scale tests build those
directly, shaped like a real run (sequential attempts per worker, a failure every 1,000
tasks with a traceback, groups, a retried task). The small tests use real runs.
"""

from __future__ import annotations

import functools

from corral._outcome import Attempt, Outcome, Status
from corral._report.report import Report
from corral._report.telemetry import WorkerSpan

T0 = 1_800_000_000.0


@functools.lru_cache(maxsize=2)
def synthetic_report(n: int = 100_000, workers: int = 8) -> Report:
    outcomes = []
    clock = [T0 + 0.2 + 0.01 * w for w in range(workers)]
    for i in range(n):
        w = i % workers
        started = clock[w]
        duration = 0.001 + (i % 7) * 0.0005
        finished = clock[w] = started + duration
        failed = i % 1000 == 999
        status = Status.FAILED if failed else Status.OK
        error = ValueError(f"bad input {i}") if failed else None
        reason = f"ValueError: bad input {i}" if failed else None
        rss = 60 * 2**20 + (i // 5000) * 2**20
        attempt = Attempt(
            w, 1000 + w, started, finished, status, reason, T0, duration * 0.9, rss, None, None
        )
        outcomes.append(
            Outcome(
                key=f"file-{i:06d}.nc",
                status=status,
                value=None if failed else i,
                error=error,
                attempts=1,
                worker=w,
                pid=1000 + w,
                started=started,
                finished=finished,
                group=f"var{i % 5}",
                history=(attempt,),
                traceback=(
                    "Traceback (most recent call last):\n"
                    f'  File "process.py", line 12, in process\n    check({i})\n'
                    f"ValueError: bad input {i}\n"
                    if failed
                    else None
                ),
            )
        )
    spans = tuple(WorkerSpan(w, 1000 + w, T0 + 0.01 * w) for w in range(workers))
    wall = max(clock) - T0 + 0.01
    return Report(outcomes, wall_seconds=wall, workers=workers, started=T0, worker_spans=spans)
