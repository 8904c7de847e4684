"""The worker's side of a hand-over: on Ctrl-C, send the finished part of the running Call.

    coordinator, engine thread                      worker process, main thread
    ──────────────────────────                      ───────────────────────────
    cancel(batch) ── HANDOVER_SIGNAL (SIGUSR1) ───► handler, run between two bytecodes of
                                                    whatever the main thread does:
                                                      IDLE     send Handover(-1) now
                                                      RUNNING  send Handover(call id, the
                                                               Result of its finished items)
                                                      BUSY     pending: sent once IDLE or
                                                               RUNNING again
    ◄══ conn ══════════════════════════════════════ Handover
    then stops the worker as before (SIGTERM to its group, SIGKILL after the grace)

Why a signal: the items of a chunk come back together, in one Result, so that a chunk of
20,000 trivial tasks costs one message. When the batch is cancelled the finished ones must not
die with the worker; a signal costs the item loop nothing, and it reaches a task blocked in
``time.sleep`` or a system call (Python runs the handler, then resumes the call). A task stuck
in C code that holds the GIL delays the handler; the coordinator waits a bounded time
(the backend's ``Capabilities.handover_seconds``) and then stops the worker without it.

States (``Responder._state``), changed only by the worker loop and ``execute``, in the main
thread: ``IDLE`` (between Calls: the loop waits for one, or has just read one and not started
it), ``RUNNING`` (the item loop of a Call runs: ``Progress`` is being filled), ``BUSY``
(anything else: decoding a Call, building or sending a Result). The handler writes to the pipe
only in ``IDLE`` and ``RUNNING``, where the main thread is not writing to it; in ``BUSY`` a
write could land in the middle of a Result's bytes. The answer is then sent when the state
leaves ``BUSY`` (after the Result, which so comes first). Every Result the worker sent before
a Handover precedes it in the pipe, which is what lets the coordinator treat a Handover as the
end of the answer.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import signal
from collections.abc import Iterator
from multiprocessing.connection import Connection
from types import FrameType

from .. import _codec
from .._messages import Handover
from .execute import Progress, partial_result

log = logging.getLogger("corral")

HANDOVER_SIGNAL = signal.SIGUSR1
"""Sent by the coordinator to a worker only, never to its group (the tasks' own processes
keep their default disposition for it)."""


class _State(enum.Enum):
    IDLE = "idle"
    RUNNING = "running"
    BUSY = "busy"


class Responder:
    """Answers the hand-over signal on ``conn`` (installed by ``install``)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._state = _State.BUSY
        self._progress: Progress | None = None
        self._pending = False
        self._writing = False

    # -- the worker loop and execute (main thread) ---------------------------------------
    def idle(self) -> None:
        self._state = _State.IDLE
        if self._pending:
            self._answer()

    def busy(self) -> None:
        self._state = _State.BUSY

    def running(self, progress: Progress) -> None:
        self._progress = progress
        self._state = _State.RUNNING
        if self._pending:
            self._answer()

    def stopped(self) -> None:
        self._state = _State.BUSY
        self._progress = None

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """The main thread writes another message (a forwarded log record, ``forward``): the
        handler must not write in the middle of it; an answer it defers is sent after."""
        state = self._state
        self._state = _State.BUSY
        try:
            yield
        finally:
            self._state = state
            if self._pending and state is not _State.BUSY:
                self._answer()

    # -- the signal handler ----------------------------------------------------------------
    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._pending = True
        if self._state is not _State.BUSY:
            try:
                self._answer()
            except Exception:  # never into the task it interrupted: the coordinator times out
                log.exception("corral: the worker could not hand over its finished items")

    def _answer(self) -> None:
        if self._writing:  # a second signal while this one's answer is being written
            return
        self._writing = True
        try:
            self._pending = False
            progress = self._progress if self._state is _State.RUNNING else None
            if progress is None:
                message = Handover(-1, None)
            else:
                message = Handover(progress.call_id, partial_result(progress))
            try:
                data = _codec.dumps(message)
            except Exception:  # a finished value that does not pickle: hand over nothing
                data = _codec.dumps(Handover(-1, None))
            with contextlib.suppress(OSError):  # the coordinator is gone: nothing to do
                self._conn.send_bytes(data)
        finally:
            self._writing = False


def install(conn: Connection) -> Responder:
    """Answer the hand-over signal from now on (worker processes only: the handler writes to
    the worker's pipe to the coordinator)."""
    responder = Responder(conn)
    signal.signal(HANDOVER_SIGNAL, responder.on_signal)
    return responder
