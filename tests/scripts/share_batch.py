"""Share an array, then run a batch whose tasks read it and hang, until the test stops us.

    python share_batch.py MARKER_DIR MODE

MODE: ``map`` (a handle passed to corral.map), ``with`` (the handle pinned by a with block).
Prints one JSON line with the segment's path once the share exists; every task reads the
shared array, leaves ``running-<item>`` in MARKER_DIR and sleeps. The test then sends SIGINT
(Ctrl-C) or SIGKILL to this process.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

import corral


def task(args: tuple[corral.Shared, int, str]) -> float:
    handle, x, marker_dir = args
    total = float(handle.value.sum())
    tmp = Path(marker_dir) / f"running-{x}.tmp"
    tmp.touch()
    os.rename(tmp, tmp.with_suffix(""))
    time.sleep(1000)
    return total


def main() -> None:
    marker_dir, mode = sys.argv[1], sys.argv[2]
    handle = corral.share(np.arange(1_000_000, dtype=np.float64))
    print(json.dumps({"path": handle.path}), flush=True)
    items = [(handle, x, marker_dir) for x in range(4)]
    if mode == "with":
        with handle:
            corral.map(task, items, workers=2, chunksize=1, kill_grace=0.5)
    else:
        corral.map(task, items, workers=2, chunksize=1, kill_grace=0.5)


if __name__ == "__main__":
    main()
