"""Readable process titles, so that ``ps`` and ``top`` tell corral's processes apart.

Every process corral starts names itself here: ``corral worker 2 [pool 4711]``, ``corral
watchdog of worker 4722 [pool 4711]``, ``corral fork server [pool 4711]``, ``corral service
keeper of omc [for pid 4722]``. A pool is named by its coordinator's pid. Titles come from
``setproctitle`` (a declared dependency); without it, or where it cannot change the title,
they are skipped: a title is a convenience, never a reason to fail.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os


def set_title(title: str) -> None:
    """Set this process's title as shown by ``ps`` (its ``/proc/PID/cmdline``)."""
    try:
        from setproctitle import setproctitle
    except ImportError:  # pragma: no cover - a declared dependency, missing only by accident
        return
    with contextlib.suppress(Exception):
        setproctitle(title)


TITLE_IN_ISOLATED_PYTHON = r"""
try:  # corral._proctitle: the title, from setproctitle's own folder (this interpreter has -I -S)
    import sys
    if sys.argv[-1]:
        sys.path.insert(0, sys.argv[-1])
        from setproctitle import setproctitle
        setproctitle(sys.argv[-2])
        del sys.path[0], setproctitle
except Exception:
    pass
"""
"""Code to put before a ``python -I -S -c`` program started with ``title_args(title)`` as its
last arguments: it sets the title without the site-packages the interpreter does not load."""


def title_args(title: str) -> list[str]:
    """The last arguments for ``TITLE_IN_ISOLATED_PYTHON``: the title and setproctitle's
    folder ("" when setproctitle is not installed)."""
    folder = ""
    with contextlib.suppress(Exception):
        spec = importlib.util.find_spec("setproctitle")
        if spec is not None and spec.origin:
            folder = os.path.dirname(os.path.dirname(spec.origin))
    return [title, folder]
