"""The function of the drain-then-resume row (tests/test_reliability_journal.py), run by the
real command line: ``corral run journal_drain_tasks:gated 0 1 ... --journal J``, with this
folder as the working directory.

``gated(x)`` leaves ``worker-<pid>`` and ``running-<x>-<random>`` in ``$DRAIN_MARKERS``, waits
until the test creates ``release-<x>`` there (at most 60 s), leaves ``done-<x>-<random>`` and
returns ``int(x) ** 2``: the test decides when each running task may finish.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def touch(path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.touch()
    os.rename(tmp, path)


def gated(x: str) -> int:
    markers = Path(os.environ["DRAIN_MARKERS"])
    touch(markers / f"worker-{os.getpid()}")
    touch(markers / f"running-{x}-{os.urandom(4).hex()}")
    deadline = time.monotonic() + 60
    while not (markers / f"release-{x}").exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # polling a file the test creates
    touch(markers / f"done-{x}-{os.urandom(4).hex()}")
    return int(x) ** 2
