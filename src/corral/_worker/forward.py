"""A task's log records, sent to the coordinator as they are logged (``forward_logging``).

    worker process                                       coordinator (``_forwarding``)
    ──────────────                                       ─────────────────────────────
    logger.info(...) in a task
      └ logger level (the coordinator's, sent at start) ─ below it: not even a record
      └ Forwarder (on the root logger) ─ Logged(call id, item, record dict) ═► key of the item,
        main thread: sent now, on the worker's pipe                          record rebuilt,
        other threads: kept, sent by the main thread next                    its logger's
        (before the next record of the main thread, or the Call's answer)    handlers

Order: the main thread writes every message on the pipe; a record logged by the task's main
thread is sent at once, so the records of one task arrive in the order they were logged and
before its Result. A thread the task started cannot write to the pipe itself (its bytes could
land in the middle of a Result); its records wait for the main thread, and may so arrive after
the records of its task that the main thread logged later.

Levels are the coordinator's: ``install`` sets the worker's root logger and every logger the
coordinator has a level for to that level, so a record the coordinator would drop by level is
never made here. Handlers inherited through ``fork`` are removed (they would write each record
a second time, from the worker).

A record whose arguments or extra attributes do not pickle arrives with its message formatted
here (and such attributes dropped); one that cannot be formatted either arrives with what its
``repr`` says. Nothing a record holds can fail the task.

Services (``_services.service``) log their start and stop on ``corral.services`` with a
``corral_service`` attribute: those records are always sent (the coordinator turns them into
events), even with ``forward_logging=False``.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import pickle
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any, Protocol

from .. import _codec
from .._messages import Logged

KEPT = 10_000
"""Records of other threads kept while the main thread does not send (an idle worker whose
thread logs on): past this many, the oldest are dropped."""

SERVICE_LOGGER = "corral.services"
SERVICE_ATTRIBUTE = "corral_service"


class Writer(Protocol):
    """What must not be interrupted by the hand-over signal's own write (``handover``)."""

    def writing(self) -> contextlib.AbstractContextManager[None]: ...


class Forwarder(logging.Handler):
    """The handler a worker puts on its root logger."""

    def __init__(self, conn: Connection, stamp: Any, records: bool) -> None:
        super().__init__()
        self._conn = conn
        self._stamp = stamp  # the worker's stamp doubles: [item index, start, call id]
        self._records = records  # False: only the services' records
        self._main = threading.main_thread().ident
        self._later: collections.deque[bytes] = collections.deque(maxlen=KEPT)
        self._sending = False  # a record logged while one is being written waits (a finalizer)
        self.writer: Writer | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if not self._records and not hasattr(record, SERVICE_ATTRIBUTE):
            return
        try:
            data = encode(record, int(self._stamp[2]), int(self._stamp[0]))
        except Exception:
            self.handleError(record)
            return
        if threading.get_ident() != self._main or self._sending:
            self._later.append(data)
            return
        self.flush_pending()
        self._send(data)

    def flush_pending(self) -> None:
        """Send what other threads logged (main thread only: before a Call's answer)."""
        while self._later:
            self._send(self._later.popleft())

    def _send(self, data: bytes) -> None:
        self._sending = True
        try:
            with self._guard(), contextlib.suppress(OSError):  # coordinator gone: nobody to tell
                self._conn.send_bytes(data)
        finally:
            self._sending = False

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        if self.writer is None:
            yield
            return
        with self.writer.writing():
            yield


def encode(record: logging.LogRecord, call_id: int, index: int) -> bytes:
    """A ``Logged`` message for ``record``; always pickles (see the module docstring)."""
    state = dict(record.__dict__)
    if record.exc_info:
        # a traceback does not pickle: its text travels, as logging's QueueHandler does it
        if not record.exc_text:
            state["exc_text"] = logging.Formatter().formatException(record.exc_info)
        state["exc_info"] = None
    message = Logged(call_id, index, state)
    try:
        return pickle.dumps(message, _codec.PROTOCOL)
    except Exception:
        pass
    try:
        state["msg"] = record.getMessage()
    except Exception:
        state["msg"] = f"{record.msg!r} % {record.args!r} (could not be formatted)"
    state["args"] = None
    for name, value in list(state.items()):
        try:
            pickle.dumps(value, _codec.PROTOCOL)
        except Exception:
            del state[name]
    return pickle.dumps(message, _codec.PROTOCOL)


def install(conn: Connection, stamp: Any, levels: dict[str, int] | None) -> Forwarder:
    """Forward this worker's log records (``levels`` None: only the services' records)."""
    root = logging.getLogger()
    forwarder = Forwarder(conn, stamp, records=levels is not None)
    if levels is not None:
        loggers = [root, *logging.Logger.manager.loggerDict.values()]
        for logger in loggers:
            if isinstance(logger, logging.Logger):
                for handler in list(logger.handlers):
                    logger.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name or None).setLevel(level)
    # A service's start and stop always reach the coordinator (it makes events of them).
    logging.getLogger(SERVICE_LOGGER).setLevel(logging.INFO)
    root.addHandler(forwarder)
    return forwarder
