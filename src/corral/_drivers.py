"""Who runs a Pool's engine: its own thread, or the caller's thread (serial backends).

A ``Pool`` talks to its engine only through one driver, so it reads the same whichever
backend it has; the backend's ``runs_in_caller_thread`` capability chooses the driver::

    ThreadDriver (process backend)            SerialDriver (serial backend)
    ──────────────────────────────            ─────────────────────────────
    start    the engine thread                nothing: there is no thread
    post     inbox + wakeup byte              runs the action now, on the caller's thread
    wait     done_event.wait()                engine.step() until the batch is done
    submitted  nothing (runs meanwhile)       wait: the task runs before submit returns
    receive  the stream's queue.get()         step until the queue has an entry (or done)
    interrupted  wait (bounded) for the       nothing: the cancel ran in ``post`` already
             workers to stop
    abandon  cancel, wait (bounded)           cancel

Caller threads only (any of them); the engine itself is driven as ``_engine`` says.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from typing import Any

from ._batch import Batch
from ._engine import Engine
from ._lifetime import Lifetime

INTERRUPT_WAIT = 10.0
"""After Ctrl-C, how long to wait for running tasks to be stopped before giving up on them."""


class ThreadDriver:
    def __init__(self, engine: Engine, life: Lifetime) -> None:
        self._engine = engine
        self._life = life

    def start(self) -> None:
        self._life.start_thread()

    def post(self, action: Callable[[], None]) -> None:
        self._life.post(action)

    def wait(self, batch: Batch) -> None:
        batch.done_event.wait()

    def submitted(self, batch: Batch) -> None:
        pass

    def receive(self, entries: queue.SimpleQueue[Any], batch: Batch) -> Any:
        """The stream's next entry (None: the batch is done)."""
        return entries.get()

    def interrupted(self, batch: Batch) -> None:
        """Ctrl-C: the batch was cancelled; give its workers a bounded time to stop."""
        deadline = time.monotonic() + INTERRUPT_WAIT
        while not batch.done_event.is_set() and time.monotonic() < deadline:
            try:
                batch.done_event.wait(deadline - time.monotonic())
            except KeyboardInterrupt:  # a second Ctrl-C: we are already stopping
                continue

    def abandon(self, batch: Batch) -> None:
        """The caller stopped reading a stream: cancel what is left of it."""
        self.post(lambda: self._engine.cancel(batch))
        batch.done_event.wait(INTERRUPT_WAIT)


class SerialDriver:
    def __init__(self, engine: Engine, life: Lifetime) -> None:
        self._engine = engine
        self._life = life

    def start(self) -> None:
        pass

    def post(self, action: Callable[[], None]) -> None:
        self._life.post(action)  # (runs it now: the Lifetime has no thread)

    def wait(self, batch: Batch) -> None:
        while not batch.done_event.is_set():
            self._engine.step()

    def submitted(self, batch: Batch) -> None:
        self.wait(batch)

    def receive(self, entries: queue.SimpleQueue[Any], batch: Batch) -> Any:
        while entries.empty():
            if batch.done_event.is_set():
                return None
            self._engine.step()
        return entries.get()

    def interrupted(self, batch: Batch) -> None:
        pass

    def abandon(self, batch: Batch) -> None:
        self.post(lambda: self._engine.cancel(batch))


Driver = ThreadDriver | SerialDriver
