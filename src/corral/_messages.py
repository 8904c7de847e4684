"""What travels on a worker's pipe, in both directions.

    coordinator ──► worker:  Call (one attempt of one or more tasks) | Stop
                             (and the hand-over signal, not a message: see ``_handover``)
    worker ──► coordinator:  Result (one per Call) | InitFailed (once, then the worker exits)
                             | Handover (once per hand-over signal)

Messages are pickled with cloudpickle by ``_codec``. A Call names its function by ``fn_id``; the
function's bytes travel once per worker, in the ``fns`` of the first Call that needs it, and the
worker keeps them (``functions`` in ``_execute``). That keeps a 20,000-item ``map`` of a lambda
from pickling the lambda 20,000 times.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Any

from ._errors import ExceptionWithTraceback


@dataclass(slots=True)
class Call:
    """One attempt at ``len(items)`` tasks, run in order by one worker.

    ``star`` False: every item is one positional argument for ``fns[fn_id]`` (``map``).
    ``star`` True: every item is ``(fn_id, args, kwargs)``.
    ``drop`` names functions of finished batches the worker may forget. ``timeouts`` is read
    only by the serial backend (a worker process is timed by the coordinator, not by itself).
    """

    call_id: int
    fns: dict[int, Any]
    fn_id: int
    items: list[Any]
    star: bool
    drop: list[int]
    timeouts: list[float | None] | None = None


@dataclass(slots=True)
class Result:
    """The outcome of every item of one Call.

    ``values[i]`` is item i's return value unless ``errors`` has an entry for i.
    ``finished[i]`` is the wall-clock time item i ended; item i started when item i-1 ended
    (item 0 at ``started``). For long chunks of short tasks ``finished`` is None and item
    times are interpolated between ``started`` and ``ended``. ``cpu`` is the CPU time of the
    whole Call.
    """

    call_id: int
    values: list[Any]
    errors: dict[int, ExceptionWithTraceback] | None
    started: float
    ended: float
    finished: array[float] | None
    cpu: float
    max_rss: int
    rss: int


@dataclass(slots=True)
class InitFailed:
    """The worker's initializer raised; the worker exits after sending this."""

    error: ExceptionWithTraceback


@dataclass(slots=True)
class Handover:
    """The answer to the hand-over signal (Ctrl-C): the finished part of the Call the worker
    was running, as a Result of its first ``len(result.values)`` items (item
    ``len(result.values)`` was running), or ``call_id`` -1 and no result when no Call was
    running. Every Result the worker sent before it comes before it in the pipe."""

    call_id: int
    result: Result | None


STOP = b"stop"
"""Sent as raw bytes: the worker finishes its loop and exits cleanly."""
