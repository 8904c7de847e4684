"""SIGTERM and SIGHUP while a batch runs: stop like Ctrl-C, clean up, then die of the signal.

SIGTERM is what ``kill``, ``timeout``, systemd, docker and SLURM send; SIGHUP is what a closed
terminal sends. Their default action ends the process at once, which would leave corral's
shared-memory segments in ``/dev/shm`` until a later corral start sweeps them, and leave
workers to their lifeline watchdogs. So, while the main thread waits for a batch
(``terminating``), a signal whose disposition is the default gets a handler that raises
``Terminated`` there. The waiting code catches it and calls ``die``: every open Pool is closed
(its batches cancelled, its workers and their services stopped), every segment this process
owns is unlinked, and the signal is delivered again with its default disposition, so the
process ends exactly as it would have without corral (exit status -15, 143 in a shell; no
``finally`` block or ``atexit`` handler runs, as with any default SIGTERM).

A handler the program installed itself (or SIG_IGN) is left alone: the program decides. A
handler that raises (``sys.exit``) unwinds through corral, whose ``with`` blocks and pool
close clean up on the way. Outside a batch wait (or off the main thread, where Python
cannot install handlers) the default action applies; workers then die with their lifeline
and segments are swept by the next corral start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import NoReturn

from . import _lifecycle

log = logging.getLogger("corral")

HANDLED = tuple(s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM or SIGHUP while it waits for a batch.

    A KeyboardInterrupt, so that everything that stops on Ctrl-C stops on it the same way (a
    serial task is interrupted, the batch cancelled). It never reaches the program: the code
    that catches it calls ``die``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    # A second SIGTERM (systemd, or an impatient user) must not interrupt the clean-up.
    for handled in HANDLED:
        with contextlib.suppress(ValueError, OSError):
            signal.signal(handled, signal.SIG_IGN)
    raise Terminated(signum)


@contextlib.contextmanager
def terminating() -> Iterator[None]:
    """While the block runs in the main thread, SIGTERM and SIGHUP (where their disposition
    is the default) raise ``Terminated``; the dispositions are restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    installed = []
    for signum in HANDLED:
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(signum) is signal.SIG_DFL:
                signal.signal(signum, _raise_terminated)
                installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            with contextlib.suppress(ValueError, OSError):
                signal.signal(signum, signal.SIG_DFL)


def die(signum: int) -> NoReturn:
    """Close every Pool, unlink this process's segments, then end the process by ``signum``
    with its default action. Does not return."""
    try:
        for pool in _lifecycle.live():
            try:
                pool.close(cancel=True)
            except Exception:
                log.warning("corral: closing %r on %s failed", pool, signum, exc_info=True)
        share = sys.modules.get("corral._sharing.share")  # not imported: no share exists here
        if share is not None:
            share.release_all()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signum])
        os.kill(os.getpid(), signum)
        os._exit(128 + signum)  # not reached: the signal's default action ends the process
