"""A coordinator for the test to SIGKILL: its workers (and what they started) must not outlive it.

    python orphan_batch.py MARKER_DIR START_METHOD MODE

MODE:
  ``busy``      two tasks each start a ``sleep 1000`` subprocess and hang;
  ``stubborn``  like busy, but the tasks ignore SIGTERM;
  ``gil``       two tasks hang inside a C call that holds the GIL (libc ``sleep`` via PyDLL);
  ``idle``      a Pool runs a batch, then sits idle with its workers started.

Markers in MARKER_DIR: ``worker-<pid>`` from each task, ``grandchild-<pid>`` for each
subprocess, and ``ready`` once everything the test waits for is in place (idle mode), or
the task markers themselves (the other modes).
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import corral


def touch(path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.touch()
    os.rename(tmp, path)


def task(x: int, marker_dir: str, mode: str) -> int:
    markers = Path(marker_dir)
    if mode == "idle":
        touch(markers / f"worker-{os.getpid()}")
        return os.getpid()
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if mode in ("busy", "stubborn"):
        child = subprocess.Popen(["sleep", "1000"])
        touch(markers / f"grandchild-{child.pid}")
    touch(markers / f"worker-{os.getpid()}")
    if mode == "gil":
        ctypes.PyDLL(None).sleep(1000)  # a C call that keeps the GIL
    time.sleep(1000)
    return x


def main() -> None:
    marker_dir, start_method, mode = sys.argv[1:4]
    fn = functools.partial(task, marker_dir=marker_dir, mode=mode)
    with corral.Pool(2, start_method=start_method) as pool:
        if mode == "idle":
            pool.map(fn, range(2), chunksize=1)
            touch(Path(marker_dir) / "ready")
            time.sleep(1000)  # idle with warm workers until the test kills this process
        else:
            pool.map(fn, range(2), chunksize=1)


if __name__ == "__main__":
    main()
