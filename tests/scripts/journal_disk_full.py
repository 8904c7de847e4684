"""A journaled batch whose journal may sit on a small filesystem (the disk-full row of the
fault matrix, tests/test_reliability_journal.py).

    python journal_disk_full.py JOURNAL MARKER_DIR N SIZE VERB

``Pool(2, journal=JOURNAL).map(task, range(N))`` (VERB ``map``), or ``list(pool.imap(...))``
(``imap``), one task per Call. Each call of ``task``
leaves ``MARKER_DIR/<x>-<coordinator pid>-<random>`` (one file per task and attempt) and
``MARKER_DIR/worker-<pid>``, takes 10 ms (so that the batch is still running when the disk
fills), and returns ``SIZE`` bytes of ``x % 256``. Prints one JSON line:
``{"results": [[len, first byte], ...]}`` when the map returns, or ``{"error": type,
"message": str}`` (exit 3) when it raises a corral error.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import corral

COORDINATOR = os.getpid()


def task(x: int, marker_dir: str, coordinator: int, size: int) -> bytes:
    Path(marker_dir, f"{x}-{coordinator}-{os.urandom(4).hex()}").touch()
    Path(marker_dir, f"worker-{os.getpid()}").touch()
    time.sleep(0.01)
    return bytes([x % 256]) * size


def one(x: int) -> bytes:
    # MARKERS and SIZE travel with this __main__ function as they are when the map starts;
    # the task's argument is x alone, the same in every run (its journaled identity)
    return task(x, MARKERS, COORDINATOR, SIZE)


MARKERS, SIZE = "", 0


def main() -> None:
    global MARKERS, SIZE
    journal, MARKERS, n, SIZE = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    verb = sys.argv[5]
    Path(MARKERS).mkdir(exist_ok=True)
    try:
        with corral.Pool(2, journal=journal, chunksize=1) as pool:
            results = pool.map(one, range(n)) if verb == "map" else list(pool.imap(one, range(n)))
    except corral.CorralError as error:
        print(json.dumps({"error": type(error).__name__, "message": str(error)}), flush=True)
        sys.exit(3)
    print(json.dumps({"results": [[len(r), r[0]] for r in results]}), flush=True)


if __name__ == "__main__":
    main()
