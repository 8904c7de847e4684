"""A chunked map whose tasks record effects, interrupted by the test's Ctrl-C mid-chunk.

    python interrupt_effects.py MARKER_DIR

20 tasks on 2 workers in chunks of 5: each task records ``("start", x)``; items with
``x % 5 == 3`` then leave ``running-<x>`` in MARKER_DIR and hang; the others record
``("end", x)`` and return. On KeyboardInterrupt the script prints one JSON line: the partial
report's statuses and effects, and what on_effect was given, then re-raises.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import corral


def task(x: int, marker_dir: str) -> int:
    corral.record(("start", x))
    if x % 5 == 3:
        tmp = Path(marker_dir, f".running-{x}")
        tmp.touch()
        os.rename(tmp, Path(marker_dir, f"running-{x}"))
        time.sleep(1000)
    corral.record(("end", x))
    return x


if __name__ == "__main__":
    applied: list[list[object]] = []
    items = [(x, sys.argv[1]) for x in range(20)]
    try:
        corral.map(
            lambda args: task(*args),
            items,
            workers=2,
            chunksize=5,
            kill_grace=0.5,
            on_effect=lambda key, effect: applied.append([key, list(effect)]),
        )
    except KeyboardInterrupt as exc:
        report = exc.report  # type: ignore[attr-defined]
        print(json.dumps({
            "statuses": [str(o.status) for o in report.outcomes],
            "effects": [[k, list(e)] for k, e in report.effects],
            "applied": applied,
        }), flush=True)  # fmt: skip
        raise
