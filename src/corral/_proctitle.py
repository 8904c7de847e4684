"""Readable process titles, so that ``ps`` and ``top`` tell corral's processes apart.

Every process corral starts names itself here: ``corral worker 2 [pool 4711]``, ``corral
watchdog [worker 4722, pool 4711]``, ``corral fork server [pool 4711]``, ``corral service keeper
...``. The pool is named by its coordinator's pid. Titles come from ``setproctitle`` (a
declared dependency); without it, or where it cannot change the title, they are skipped:
a title is a convenience, never a reason to fail.
"""

from __future__ import annotations

import contextlib


def set_title(title: str) -> None:
    """Set this process's title as shown by ``ps`` (its ``/proc/PID/cmdline``)."""
    try:
        from setproctitle import setproctitle
    except ImportError:  # pragma: no cover - a declared dependency, missing only by accident
        return
    with contextlib.suppress(Exception):
        setproctitle(title)
