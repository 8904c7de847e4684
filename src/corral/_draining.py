"""The signals that drain a batch: SIGUSR1 (SLURM's ``--signal``), and SIGTERM with a grace.

SLURM sends ``--signal=USR1@120`` some time before it kills a job at its time limit;
schedulers and ``kill`` send SIGTERM. While the main thread waits for a batch of ``map`` or
``run``, ``draining`` installs handlers (only where the disposition is the default: a handler
the program installed itself is left alone, as in ``_signals``):

    SIGUSR1 ───────────────────────► drain("SIGUSR1"): no new task starts; running ones finish
                                     for up to drain_grace s, then are cancelled; the batch
                                     ends with Report.drained (BatchError when errors="raise")
    SIGTERM (drain_grace > 0) ─────► drain("SIGTERM"), the same; once the batch has drained,
                                     the process ends by SIGTERM as ``_signals`` would have
    SIGTERM again, while draining ─► ``Terminated``: stop at once (``_signals.die``)

With ``drain_grace=0`` (the default) SIGTERM is left to ``_signals.terminating``: stop at
once and clean up. The drain itself runs on the engine thread (``_survival.Survival.drain``):
the handler only posts it. Caller's main thread only.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

from ._signals import Terminated


class DrainSignals:
    """Which signal drained the batch (None: none did)."""

    def __init__(self, drain: Callable[[str], None]) -> None:
        self._drain = drain
        self.signum: int | None = None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            if signum == signal.SIGTERM:  # a second SIGTERM: stop now
                raise Terminated(signum)
            return  # already draining
        self.signum = signum
        self._drain(signal.Signals(signum).name)


@contextlib.contextmanager
def draining(drain: Callable[[str], None], grace: float) -> Iterator[DrainSignals]:
    """While the block runs in the main thread, SIGUSR1 (and SIGTERM, with ``grace > 0``)
    call ``drain(signal name)`` once; dispositions are restored after."""
    state = DrainSignals(drain)
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    wanted = [signal.SIGUSR1] + ([signal.SIGTERM] if grace > 0 else [])
    installed = []
    for signum in wanted:
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(signum) is signal.SIG_DFL:
                signal.signal(signum, state.handle)
                installed.append(signum)
    try:
        yield state
    finally:
        for signum in installed:
            with contextlib.suppress(ValueError, OSError):
                signal.signal(signum, signal.SIG_DFL)
