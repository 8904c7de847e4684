"""Run a batch that gets interrupted by Ctrl-C (SIGINT sent by the test).

    python interrupt_batch.py MARKER_DIR MODE

MODE: ``map`` (corral.map on 2 workers), ``run`` (corral.run of keyed Tasks), ``scheduled``
(keyed Tasks with locks and a last task ``agg`` that depends on all of them), ``stubborn``
(like map, but running tasks ignore SIGTERM), ``serial`` (CORRAL_WORKERS=1: tasks run in
this process).

Items 0 and 1 return at once; every later item leaves markers in MARKER_DIR and hangs:
``running-<item>``, ``worker-<pid>`` and (except in serial mode) ``grandchild-<pid>`` of a
``sleep 1000`` subprocess it started. On KeyboardInterrupt the script prints one JSON line
with what it caught and the partial report, then re-raises.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import corral

N = 10


def touch(path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.touch()
    os.rename(tmp, path)


def task(x: int, marker_dir: str, stubborn: bool, grandchild: bool) -> int:
    if x < 2:
        return x * x
    markers = Path(marker_dir)
    if stubborn:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if grandchild:
        child = subprocess.Popen(["sleep", "1000"])
        touch(markers / f"grandchild-{child.pid}")
    touch(markers / f"worker-{os.getpid()}")
    touch(markers / f"running-{x}")
    time.sleep(1000)
    return x * x


def main() -> None:
    marker_dir, mode = sys.argv[1], sys.argv[2]
    fn = functools.partial(
        task, marker_dir=marker_dir, stubborn=mode == "stubborn", grandchild=mode != "serial"
    )
    workers = 1 if mode == "serial" else 2
    if mode == "serial":  # in-process: workers=1 alone would start one worker process
        os.environ["CORRAL_WORKERS"] = "1"
    try:
        if mode == "run":
            tasks = [corral.Task(fn, (x,), key=f"t{x}") for x in range(N)]
            corral.run(tasks, workers=workers, chunksize=1, kill_grace=0.5)
        elif mode == "scheduled":
            keys = [f"t{x}" for x in range(N)]
            tasks = [corral.Task(fn, (x,), key=k, locks=[f"f{x % 3}"]) for x, k in enumerate(keys)]
            tasks.append(corral.Task(fn, (0,), key="agg", after=keys))
            corral.run(tasks, workers=workers, kill_grace=0.5)
        else:
            corral.map(fn, range(N), workers=workers, chunksize=1, kill_grace=0.5)
    except KeyboardInterrupt as exc:
        report = getattr(exc, "report", None)
        caught = {"caught": type(exc).__name__, "has_report": report is not None}
        if report is not None:
            caught["keys"] = [o.key for o in report.outcomes]
            caught["statuses"] = [str(o.status) for o in report.outcomes]
            caught["values"] = [o.value for o in report.outcomes]
            caught["errors"] = [type(o.error).__name__ for o in report.outcomes]
        print(json.dumps(caught), flush=True)
        raise
    print(json.dumps({"caught": None}), flush=True)


if __name__ == "__main__":
    main()
