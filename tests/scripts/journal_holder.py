"""Hold a journal open for writing (a Pool with ``journal=``) until killed.

    python journal_holder.py JOURNAL

Runs a 3-task map on the serial backend, then creates ``JOURNAL.ready`` and waits.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import corral


def double(x: int) -> int:
    return 2 * x


if __name__ == "__main__":
    journal = Path(sys.argv[1])
    with corral.Pool(backend="serial", journal=journal) as pool:
        pool.map(double, range(3))
        journal.with_name(journal.name + ".ready").touch()
        threading.Event().wait()
