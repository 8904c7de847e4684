"""The records a finished task leaves behind: ``Outcome``, ``Attempt``, ``Failure`` (and
``Status``, from ``_status``; the ``Report`` is ``_report.report``'s).

These are plain data. The engine builds one ``Outcome`` per task when the task reaches a final
state; every later consumer (the ``Report``, progress, the summary table, and later the journal
and telemetry exports) reads Outcomes and nothing else.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, NamedTuple

from ._public import public
from ._status import Status as Status  # where it was: ``from ._outcome import Status``


@public
class Attempt(NamedTuple):
    """One attempt of a task: where and when it ran, and how it ended.

    Attributes:
        worker: the worker slot that ran it (-1 in-process).
        pid: the process that ran it.
        started, finished: wall-clock times (``time.time()``); None where unknown (an item
            of a chunk that was lost with its worker).
        status: how this attempt ended (``ok``, ``failed``, ``timeout``, ``crashed``,
            ``cancelled``). An attempt whose result was lost through no fault of its own (it
            ran in a chunk whose worker died or was stopped while running another task, or
            between two; its worker was stopped for ``min_free_memory`` or recycled) is
            ``crashed`` when the worker died, ``cancelled`` when corral stopped it; its
            ``error`` starts ``"the result was lost: "`` and says why. It is not charged to
            ``retries``.
        error: ``"Type: message"`` of its error (one line, cut if long), None when ok.
        queued: when the task became ready to run for this attempt (``time.time()``): when
            its batch was submitted (or an ``imap``'s input was read), or, for a retry, when
            its back-off ended.
        cpu: CPU seconds (user + system) of the worker and of the child processes that
            ended during the attempt; a chunk's share (its CPU divided evenly) for a task
            run in a chunk. None when unknown (the worker died).
        peak_rss: bytes: the worker's peak resident size during the attempt's Call (Linux:
            the kernel's high-water mark, reset after each Call of 5 ms or more; a shorter
            Call gets the peak since the last reset, an upper bound), plus the peak of the
            largest child process that ended during it (``_worker.meter`` and
            ``docs/observability.md`` say the limits). Elsewhere, or with
            ``telemetry=False``: the worker's peak so far. None when unknown.
        exitcode, signal: how the worker ended when the attempt ended with its death: its
            exit status, or the signal that killed it (``crashed``); the signal corral sent
            to stop it (``timeout``: SIGTERM, then SIGKILL past ``kill_grace``). None while
            the worker lived on.

    A named tuple: a Report of many tasks builds one per task cheaply.
    """

    worker: int | None
    pid: int | None
    started: float | None
    finished: float | None
    status: Status
    error: str | None = None
    queued: float | None = None
    cpu: float | None = None
    peak_rss: int | None = None
    exitcode: int | None = None
    signal: int | None = None

    @property
    def duration(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started


@public
@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one task.

    Attributes:
        key: the task's key (its input position for ``map``).
        status: how it ended.
        value: the return value when ``status == "ok"``, else None.
        error: the exception when it did not succeed (its own type for a task that raised,
            ``TaskTimeout``, ``WorkerCrashed``, ...), else None.
        attempts: how many times it was started in a worker: the retries its failures
            used, plus the runs whose result was lost with their worker through no fault of
            their own (not charged to ``retries``; see ``history`` and
            ``docs/failures.md``), plus the last.
        worker: the worker slot that ran the last attempt (-1 in-process, None if never run).
        pid: process id that ran the last attempt.
        started, finished: wall-clock times (``time.time()``) of the last attempt.
        cpu_seconds: CPU time of the last attempt (for tasks run in a chunk, the chunk's CPU
            time divided evenly).
        max_rss: the worker's peak resident memory in bytes, as seen right after the attempt.
        traceback: the worker-side traceback text for a task that raised.
        group: the task's group label, if it has one (any hashable; shown with ``str()``).
        history: every attempt, in order (``Attempt``): the retried ones, then the last;
            ``len(history) == attempts``. Empty for a task that never started, and for a
            ``cached`` one (its earlier run's history is kept if it was given).
        effects: what the successful attempt recorded with ``corral.record``, in record
            order (a failed, timed-out or retried attempt's effects are discarded); a
            ``cached`` task's are the ones its earlier run recorded. Empty otherwise.
        stdout, stderr: what the last attempt wrote (``capture_output=True``; None
            otherwise), file-descriptor level: its prints, its C code's and its child
            processes' output; up to its death for a task that crashed or timed out. The
            last ``output_limit`` bytes of each, after a ``[corral: N bytes cut ...]`` line
            when cut.
    """

    key: Any
    status: Status
    value: Any = None
    error: BaseException | None = None
    attempts: int = 0
    worker: int | None = None
    pid: int | None = None
    started: float | None = None
    finished: float | None = None
    cpu_seconds: float | None = None
    max_rss: int | None = None
    traceback: str | None = None
    group: Hashable | None = None
    history: tuple[Attempt, ...] = ()
    effects: tuple[Any, ...] = ()
    stdout: str | None = None
    stderr: str | None = None

    @property
    def ok(self) -> bool:
        """Succeeded: ``ok``, or ``cached`` from a run where it succeeded (no error)."""
        status = self.status
        return status is Status.OK or (status is Status.CACHED and self.error is None)

    @property
    def duration(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started


@public
@dataclass(frozen=True, slots=True)
class Failure:
    """Stands in a result list for a task that did not succeed (``errors="return"``)."""

    key: Any
    status: Status
    error: BaseException | None

    def __bool__(self) -> bool:
        return False

    @property
    def reason(self) -> str:
        if self.error is None:
            return self.status.value
        return f"{type(self.error).__name__}: {self.error}"

    def __repr__(self) -> str:
        return f"Failure(key={self.key!r}, status={self.status.value!r}, reason={self.reason!r})"


def result_of(outcome: Outcome) -> Any:
    """The value for a result list: the value, or a ``Failure`` for a task that did not succeed."""
    if outcome.ok:
        return outcome.value
    return Failure(outcome.key, outcome.status, outcome.error)
