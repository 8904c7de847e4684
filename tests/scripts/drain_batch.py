"""A batch that the test drains with a signal (SIGUSR1, SIGTERM), as SLURM's --signal would.

    python drain_batch.py MARKER_DIR GRACE

``corral.run`` of 8 keyed Tasks on 2 workers (one task per Call), ``drain_grace=GRACE``,
``errors="return"``. Each task leaves ``worker-<pid>`` and ``running-<x>`` in MARKER_DIR, waits
until the test creates ``release`` (or 120 s), leaves ``done-<x>`` and returns ``x * x``. When
the batch returns, the script prints one JSON line: the Report's ``drained`` and, per task,
its status and error message.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import corral


def touch(path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.touch()
    os.rename(tmp, path)


def task(x: int, marker_dir: str) -> int:
    markers = Path(marker_dir)
    touch(markers / f"worker-{os.getpid()}")
    touch(markers / f"running-{x}")
    deadline = time.monotonic() + 120
    while not (markers / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.02)  # polling a file the test creates
    touch(markers / f"done-{x}")
    return x * x


def main() -> None:
    marker_dir, grace = sys.argv[1], float(sys.argv[2])
    tasks = [corral.Task(task, (x, marker_dir), key=f"t{x}") for x in range(8)]
    report = corral.run(tasks, workers=2, drain_grace=grace, errors="return", chunksize=1)
    print(
        json.dumps(
            {
                "drained": report.drained,
                "tasks": {
                    str(o.key): [o.status.value, str(o.error) if o.error else None, o.value]
                    for o in report.outcomes
                },
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
