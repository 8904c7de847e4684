"""A batch that keeps failing into an error folder, until the test SIGKILLs this process.

    python error_dir_batch.py ERROR_DIR MARKER_DIR

400 tasks on 2 workers, one at a time: every task fails (a ValueError with a long message, so
each report takes a moment to write), except task 0, which leaves ``worker-<pid>`` in
MARKER_DIR and hangs: the test kills this coordinator while reports are being written.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import corral


def task(x: int, marker_dir: str) -> int:
    Path(marker_dir, f"worker-{os.getpid()}").touch()
    if x == 0:
        time.sleep(600)
    raise ValueError(f"task {x} failed: " + "why " * 2000)


if __name__ == "__main__":
    error_dir, marker_dir = sys.argv[1], sys.argv[2]
    tasks = [corral.Task(task, (x, marker_dir), key=f"job/{x}") for x in range(400)]
    corral.run(tasks, workers=2, chunksize=1, errors="return", error_dir=error_dir)
