"""corral's own logger (``"corral"``) tells the story of a run, as an event subscriber.

    engine thread: Events.emit ─► Story(event) ─► log.info / log.debug ─► the user's handlers

At INFO: each run (batch) started (tasks, workers, start method) and finished (counts by how
tasks ended, wall time); each worker ready (pid, start-up seconds), recycled, killed, died
(exit code or signal); each Service started and stopped (program, port, pid); each task
failure (key, reason) and retry. DEBUG adds each task's dispatch and each worker's process
start and retirement.

Subscribed by the engine only when ``"corral"`` takes INFO records at the time the Pool is
made (``wanted``), so a run whose user did not configure logging builds no event for it. The
library convention holds: corral adds no handler, so nothing is written unless the user
configures logging.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from .._events import (
    BatchFinished,
    BatchStarted,
    ServiceStarted,
    ServiceStopped,
    TaskFinished,
    TaskRetried,
    TaskStarted,
    WorkerDied,
    WorkerKilled,
    WorkerReady,
    WorkerRecycled,
    WorkerRetired,
    WorkerStarted,
)
from .._outcome import Status
from .._reasons import reason_lines

log = logging.getLogger("corral")


def wanted() -> bool:
    return log.isEnabledFor(logging.INFO)


class Story:
    def __init__(self) -> None:
        self._ended: dict[int, Counter[str]] = {}
        self._debug = log.isEnabledFor(logging.DEBUG)

    def __call__(self, event: Any) -> None:
        kind = type(event)
        if kind is TaskStarted:
            if self._debug:
                log.debug(
                    "task %r started on worker %s (pid %s), attempt %d",
                    event.key, event.worker, event.pid, event.attempt,
                )  # fmt: skip
        elif kind is TaskFinished:
            self._finished(event)
        elif kind is TaskRetried:
            log.info(
                "task %r: attempt %d failed (%s); retried in %.3g s",
                event.key, event.attempt, _reason(event.error), event.delay,
            )  # fmt: skip
        elif kind is BatchStarted:
            self._ended[event.batch] = Counter()
            how = f"started by {event.start_method}" if event.start_method else "in-process"
            log.info("run started: %d tasks, %d workers (%s)", event.tasks, event.workers, how)
        elif kind is BatchFinished:
            counts = self._ended.pop(event.batch, Counter())
            said = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "none"
            log.info("run finished: %d tasks in %.3f s: %s", event.tasks, event.wall, said)
        else:
            self._worker_or_service(event)

    def _finished(self, event: TaskFinished) -> None:
        counts = self._ended.get(event.batch)
        if counts is not None:
            counts[str(event.status)] += 1
        if event.status is not Status.OK and event.status is not Status.CACHED:
            log.info("task %r %s: %s", event.key, event.status, _reason(event.error))

    def _worker_or_service(self, event: Any) -> None:
        kind = type(event)
        if kind is WorkerReady:
            log.info(
                "worker %s started: pid %s, ready in %.3f s", event.worker, event.pid, event.seconds
            )
        elif kind is WorkerStarted:
            if self._debug:
                log.debug("worker %s: process pid %s started", event.worker, event.pid)
        elif kind is WorkerRecycled:
            log.info(
                "worker %s (pid %s) recycled (rss %d bytes)", event.worker, event.pid, event.rss
            )
        elif kind is WorkerDied:
            how = f"signal {event.signal}" if event.signal else f"exit code {event.exitcode}"
            log.info("worker %s (pid %s) died: %s", event.worker, event.pid, how)
        elif kind is WorkerKilled:
            log.info("worker %s (pid %s) killed: %s", event.worker, event.pid, event.reason)
        elif kind is WorkerRetired:
            if self._debug:
                log.debug("worker %s (pid %s) retired", event.worker, event.pid)
        elif kind is ServiceStarted:
            log.info(
                "service %s started on port %s (pid %s, worker %s)",
                event.program, event.port, event.pid, event.worker,
            )  # fmt: skip
        elif kind is ServiceStopped:
            log.info(
                "service %s stopped (port %s, pid %s, worker %s)",
                event.program, event.port, event.pid, event.worker,
            )  # fmt: skip


def _reason(error: BaseException | None) -> str:
    lines = reason_lines(error, 1)
    return lines[0] if lines else "no reason given"
