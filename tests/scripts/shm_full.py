"""corral with a full /dev/shm (the "/dev/shm full" row of the fault matrix,
tests/test_reliability_journal.py). Run it where /dev/shm is a small tmpfs of its own (a
mount namespace): it fills it for real.

    python shm_full.py

1. ``corral.share`` of an array larger than /dev/shm: the error, and the corral segments
   left in /dev/shm after it;
2. /dev/shm filled up to the last byte (a filler file written until ENOSPC): a batch on 2
   workers (they start and report through what multiprocessing makes, which falls back
   elsewhere when /dev/shm has no room), then ``corral.share`` of a small array: its error;
3. the filler removed: a small array shared and read back by the workers.

Prints one JSON line: each step's error type and message (or None), the batches' results,
the worker pids, and the corral segments left in /dev/shm at the end.
"""

from __future__ import annotations

import errno
import json
import os
from typing import Any

import numpy as np

import corral
from corral._sharing import segments

SHM = segments.SHM_DIR


def square(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def total(pair: tuple[Any, int]) -> tuple[float, int]:
    handle, x = pair
    return float(handle.value.sum()) + x, os.getpid()


def fill_up(path: str) -> int:
    """Write zeros to ``path`` until the filesystem says ENOSPC; the bytes written."""
    written = 0
    block = b"\0" * (64 * 1024)
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                written += f.write(block) or 0
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
            if written > 1 << 30:  # not a small filesystem: this is not the test's machine
                raise SystemExit(f"{SHM} is not a small tmpfs of its own")
    return written


def attempt(fn: Any) -> tuple[Any, Any]:
    try:
        return fn(), None
    except corral.CorralError as error:
        return None, [type(error).__name__, str(error)]


def segments_left() -> list[str]:
    return sorted(n for n in os.listdir(SHM) if n.startswith("corral-"))


def main() -> None:
    out: dict[str, Any] = {"shm_bytes": os.statvfs(SHM).f_blocks * os.statvfs(SHM).f_frsize}
    big = np.ones(out["shm_bytes"] // 8 * 2)  # twice the size of /dev/shm
    _, out["share_big"] = attempt(lambda: corral.share(big))
    out["left_after_big"] = segments_left()

    filler = os.path.join(SHM, "filler")
    out["filler_bytes"] = fill_up(filler)
    out["free_when_full"] = os.statvfs(SHM).f_bavail * os.statvfs(SHM).f_frsize
    squares, out["map_error"] = attempt(lambda: corral.map(square, range(6), workers=2))
    out["map_when_full"] = [r[0] for r in squares] if squares else None
    pids = {r[1] for r in squares} if squares else set()
    small = np.arange(1000.0)
    _, out["share_small_when_full"] = attempt(lambda: corral.share(small))
    out["left_when_full"] = segments_left()
    os.unlink(filler)

    def shared_batch() -> list[tuple[float, int]]:
        with corral.share(small) as handle:
            return corral.map(total, [(handle, x) for x in range(4)], workers=2)

    results, out["share_error"] = attempt(shared_batch)
    out["shared_results"] = [r[0] for r in results] if results else None
    out["workers"] = sorted(pids | ({r[1] for r in results} if results else set()))
    out["left"] = segments_left()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
