"""The process-wide hooks corral needs, and nothing else: stop live pools at interpreter exit,
and tell shared data (``_sharing.share``) which pools are open and when they started.

A Pool that was never closed (a script that forgot ``with``) would otherwise leave worker
processes behind and make ``multiprocessing``'s own exit handler wait on them forever. The
registry holds each Pool's ``Lifetime`` (``_lifetime``: its engine thread, workers and pipe,
never the Pool itself) from its start until its workers are gone, weakly: a running one is
held by its engine thread, and a Pool that is collected is closed by its finalizer, so
interpreter exit finds (and closes) every pool that still has workers, collected or not.

Every Pool start sweeps the shared-memory segments of dead coordinators
(``_sharing.segments.sweep``). A Pool's close does not release shares: a share lives as long as
its owner holds it. Pools and shares take a number from one counter (``tick``: when each was
born), so that ``_sharing.share`` can tell whether the workers of a fork Pool were forked after
a share was made, and so already hold its data.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import weakref
from collections.abc import Iterator
from typing import Any

_live: weakref.WeakSet[Any] = weakref.WeakSet()
_starting: set[int] = set()
"""Stamps of the Pools being started: not in ``live()`` yet, but what is pickled now (their
initializer, their fixtures) may be for their workers."""
_ticks = itertools.count(1)
_registered = False


def tick() -> int:
    """A number larger than every one handed out before in this process."""
    return next(_ticks)


@contextlib.contextmanager
def starting(born: int) -> Iterator[None]:
    """Mark a Pool as starting (between its tick and ``register``)."""
    _starting.add(born)
    try:
        yield
    finally:
        _starting.discard(born)


def any_starting() -> bool:
    return bool(_starting)


def register(pool: Any) -> None:
    global _registered
    if not _registered:
        # Registered after multiprocessing's own handler, so it runs before it (LIFO).
        atexit.register(_close_all)
        _registered = True
    _live.add(pool)
    from ._sharing import segments as _shm

    _shm.sweep()


def unregister(pool: Any) -> None:
    _live.discard(pool)


def live() -> list[Any]:
    """The Lifetimes of the pools whose workers may still run (open or closing)."""
    return list(_live)


def _close_all() -> None:
    for pool in list(_live):
        try:
            pool.close(cancel=True, wait=True)
        except Exception:
            logging.getLogger("corral").warning(
                "corral: closing %r at exit failed", pool, exc_info=True
            )
