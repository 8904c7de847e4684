"""The process-wide hooks corral needs, and nothing else: stop live pools at interpreter exit.

A Pool that was never closed (a script that forgot ``with``) would otherwise leave worker
processes behind and make ``multiprocessing``'s own exit handler wait on them. The registry is
weak: it never keeps a Pool alive.
"""

from __future__ import annotations

import atexit
import logging
import weakref
from typing import Any

_live: weakref.WeakSet[Any] = weakref.WeakSet()
_registered = False


def register(pool: Any) -> None:
    global _registered
    if not _registered:
        # Registered after multiprocessing's own handler, so it runs before it (LIFO).
        atexit.register(_close_all)
        _registered = True
    _live.add(pool)


def unregister(pool: Any) -> None:
    _live.discard(pool)


def _close_all() -> None:
    for pool in list(_live):
        try:
            pool.close(cancel=True)
        except Exception:
            logging.getLogger("corral").warning(
                "corral: closing %r at exit failed", pool, exc_info=True
            )
