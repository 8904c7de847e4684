"""A journaled batch for the durability and reader tests.

    python journal_batch.py JOURNAL MARKER_DIR N MODE [START_METHOD]

Maps ``task`` over ``range(N)`` with ``journal=JOURNAL`` on 2 workers (forkserver), chunks of
at most 4. Each call of ``task`` leaves ``MARKER_DIR/<x>-<coordinator pid>-<random>`` (one
file per task and attempt) and returns ``2 * x``. MODE: ``slow`` (each task sleeps 5 ms),
``quick`` (1 ms), ``crashy`` (quick; ``retries=3``, and workers may be SIGKILLed by the test).
START_METHOD: the workers' (default: corral's). Prints ``done <n>`` when the map returns; on
Ctrl-C prints ``interrupted`` and exits 130.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import corral

COORDINATOR = os.getpid()


def task(x: int, marker_dir: str, coordinator: int, pause: float) -> int:
    Path(marker_dir, f"{x}-{coordinator}-{os.urandom(4).hex()}").touch()
    Path(marker_dir, f"worker-{os.getpid()}").touch()
    time.sleep(pause)
    return 2 * x


def one(x: int) -> int:
    # MARKERS and PAUSE travel with this __main__ function as they are when the map starts
    return task(x, MARKERS, COORDINATOR, PAUSE)


MARKERS, PAUSE = "", 0.0

if __name__ == "__main__":
    journal, markers, n, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    Path(markers).mkdir(exist_ok=True)
    MARKERS, PAUSE = markers, 0.005 if mode == "slow" else 0.001
    retries = 3 if mode == "crashy" else 0
    start_method = sys.argv[5] if len(sys.argv) > 5 else None
    try:
        with corral.Pool(
            2,
            journal=journal,
            chunksize=4,
            retries=retries,
            start_method=start_method,
        ) as pool:
            results = pool.map(one, range(n))
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
    assert results == [2 * x for x in range(n)]
    print(f"done {len(results)}", flush=True)
