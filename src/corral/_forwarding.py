"""The coordinator's side of log forwarding: a task's records, given to its loggers here.

Engine thread. A worker sends each record its tasks log as a ``Logged`` message
(``_worker.forward``); the engine hands it to ``Forwarding.deliver``, which rebuilds the
``LogRecord``, sets ``record.corral_task`` (the key of the task that logged it: the Call and
item it names, looked up in the slot's Calls in flight; None between tasks) and
``record.corral_worker`` (the worker slot), and hands it to the logger of the same name in
this process, whose handlers write it (``Logger.handle``: the level was checked in the worker,
against the levels this process had when the worker started, ``logger_levels``).

A record a Service logged about its start or stop (``corral_service``) becomes a
``ServiceStarted``/``ServiceStopped`` event; it is written only if its logger here takes its
level (it was sent whatever the level, for the event).
"""

from __future__ import annotations

import logging
from typing import Any

from ._events import Events, ServiceStarted, ServiceStopped
from ._messages import Logged
from ._slots import Slot

log = logging.getLogger("corral")

OFF = logging.CRITICAL + 1
"""The level a disabled logger is given in the workers: nothing passes it."""


def logger_levels() -> dict[str, int]:
    """The levels of this process's loggers that have one (``""``: the root), for a worker:
    there, a record below its logger's level here is never made."""
    levels = {"": logging.getLogger().level}
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger):
            continue
        if logger.disabled:
            levels[name] = OFF
        elif logger.level != logging.NOTSET:
            levels[name] = logger.level
    disabled = logging.getLogger().manager.disable  # logging.disable(level)
    if disabled:
        levels = {name: max(level, disabled + 1) for name, level in levels.items()}
    return levels


class Forwarding:
    def __init__(self, slots: list[Slot], events: Events, in_caller: bool) -> None:
        self._slots = slots
        self._events = events
        self._in_caller = in_caller

    def deliver(self, slot_id: int, message: Logged) -> None:
        try:
            # as makeLogRecord, without LogRecord.__init__ (a third of the cost per record):
            # every attribute it would set came with the record
            record = logging.LogRecord.__new__(logging.LogRecord)
            record.__dict__.update(message.record)
            record.corral_task = self._key(slot_id, message.call_id, message.index)
            worker = -1 if self._in_caller else slot_id  # as Outcome.worker says it
            record.corral_worker = worker
            service = getattr(record, "corral_service", None)
            logger = logging.getLogger(record.name)
            if service is not None:
                self._service(worker, service)
                if not logger.isEnabledFor(record.levelno):
                    return
            logger.handle(record)
        except Exception:  # a user's filter or handler: never the engine's end
            log.exception("corral: a forwarded log record could not be handled")

    def _key(self, slot_id: int, call_id: int, index: int) -> Any:
        for flight in self._slots[slot_id].calls:
            if flight.call_id == call_id and 0 <= index < len(flight.positions):
                return flight.batch.key_of(flight.positions[index])
        return None

    def _service(self, worker: int, service: Any) -> None:
        if not self._events.rare:
            return
        try:
            what, program, port, pid, seconds = service
        except (TypeError, ValueError):
            return
        if what == "started":
            self._events.emit(ServiceStarted(worker, str(program), port, pid, seconds))
        else:
            self._events.emit(ServiceStopped(worker, str(program), port, pid))
