"""What travels on a worker's pipe, in both directions.

    coordinator ──► worker:  Call (one attempt of one or more tasks) | Stop
                             (and the hand-over signal, not a message: see ``_worker.handover``)
    worker ──► coordinator:  Ready (once, when started up)
                             | Result or CallFailed (one per Call)
                             | Logged (a task's log record, as it is logged: forward_logging)
                             | InitFailed (once, then the worker exits)
                             | TEARDOWN (after Stop: the fixture it tears down now)
                             | Handover (once per hand-over signal)

Messages are pickled with cloudpickle by ``_codec``; a Call's bytes start with its id
(``_codec.dumps_call``), so a worker knows which Call it is unpacking before it unpickles
it. A Call names its function by ``fn_id``; the function's bytes travel once per worker, in
the ``fns`` of the first Call that needs it, and the worker keeps them (``functions`` in
``_worker.execute``). That keeps a 20,000-item ``map`` of a lambda from pickling the lambda 20,000
times.

The messages sent once per worker or per failure are NamedTuples (immutable, typed), not
dataclasses, which compile their methods from source at every import of this module, in the
coordinator and in every fork server (issue 15, start-up). ``Call`` and ``Result`` are
mutable ``Record``s with ``__slots__`` (the per-task path): no module a worker imports needs
``dataclasses``, and with it ``inspect``.
"""

from __future__ import annotations

import signal
from array import array
from typing import Any, NamedTuple

from ._errors import ExceptionWithTraceback
from ._record import Record


class Call(Record):
    """One attempt at ``len(items)`` tasks, run in order by one worker.

    ``star`` False: every item is one positional argument for ``fns[fn_id]`` (``map``).
    ``star`` True: every item is ``(fn_id, args, kwargs)``.
    ``drop`` names functions of finished batches the worker may forget. ``timeouts`` is read
    only by the serial backend (a worker process is timed by the coordinator, not by itself).
    """

    __slots__ = ("call_id", "fns", "fn_id", "items", "star", "drop", "timeouts")  # noqa: RUF023

    def __init__(
        self,
        call_id: int,
        fns: dict[int, Any],
        fn_id: int,
        items: list[Any],
        star: bool,
        drop: list[int],
        timeouts: list[float | None] | None = None,
    ) -> None:
        self.call_id = call_id
        self.fns = fns
        self.fn_id = fn_id
        self.items = items
        self.star = star
        self.drop = drop
        self.timeouts = timeouts

    def __reduce__(self) -> tuple[Any, ...]:
        # A tuple of the fields: a slots dataclass's own pickling (``__getstate__`` walking
        # ``fields()``) costs more than a one-task Call's whole round trip (chunksize=1).
        return Call, (self.call_id, self.fns, self.fn_id, self.items, self.star, self.drop,
                      self.timeouts)  # fmt: skip


class Result(Record):
    """The outcome of every item of one Call.

    ``values[i]`` is item i's return value unless ``errors`` has an entry for i.
    ``finished[i]`` is the wall-clock time item i ended; item i started when item i-1 ended
    (item 0 at ``started``). For long chunks of short tasks ``finished`` is None and item
    times are interpolated between ``started`` and ``ended``. ``cpu`` is the CPU time of the
    whole Call. ``max_rss``: the worker's peak resident size since it started.
    ``effects[i]``: what item i recorded with ``corral.record``, in order, for the items that
    succeeded (None when no item recorded any).

    Telemetry (``_worker.meter``; zero when the pool has ``telemetry=False``):
    ``child_cpu`` is the CPU time of the worker's child processes that ended during the Call,
    ``peak_rss`` the worker's peak resident size during the Call plus that of its largest
    child that ended then (0: not measured).

    ``output`` (capture_output): item i's (stdout, stderr), cut to the last ``output_limit``
    bytes each; an item that wrote nothing has no entry. None: not captured.
    """

    __slots__ = ("call_id", "values", "errors", "started", "ended", "finished", "cpu",  # noqa: RUF023
                 "max_rss", "rss", "effects", "child_cpu", "peak_rss", "output")  # fmt: skip

    def __init__(
        self,
        call_id: int,
        values: list[Any],
        errors: dict[int, ExceptionWithTraceback] | None,
        started: float,
        ended: float,
        finished: array[float] | None,
        cpu: float,
        max_rss: int,
        rss: int,
        effects: dict[int, tuple[Any, ...]] | None = None,
        child_cpu: float = 0.0,
        peak_rss: int = 0,
        output: dict[int, tuple[str, str]] | None = None,
    ) -> None:
        self.call_id = call_id
        self.values = values
        self.errors = errors
        self.started = started
        self.ended = ended
        self.finished = finished
        self.cpu = cpu
        self.max_rss = max_rss
        self.rss = rss
        self.effects = effects
        self.child_cpu = child_cpu
        self.peak_rss = peak_rss
        self.output = output

    def __reduce__(self) -> tuple[Any, ...]:
        # A tuple of the fields, ``finished`` as its raw doubles: pickling an ``array`` and a
        # slots dataclass the general way costs more than a one-task Call's round trip.
        finished = self.finished.tobytes() if self.finished is not None else None
        return _result, (self.call_id, self.values, self.errors, self.started, self.ended,
                         finished, self.cpu, self.max_rss, self.rss, self.effects,
                         self.child_cpu, self.peak_rss, self.output)  # fmt: skip


def _result(call_id: int, values: list[Any], errors: Any, started: float, ended: float,
            finished: bytes | None, *rest: Any) -> Result:  # fmt: skip
    """A Result from its ``__reduce__`` tuple."""
    times = None
    if finished is not None:
        times = array("d")
        times.frombytes(finished)
    return Result(call_id, values, errors, started, ended, times, *rest)


NO_OUTPUT = ("", "")
"""What an item with no entry in ``Result.output`` wrote (nothing)."""


class InitFailed(NamedTuple):
    """Why the worker stops: sent once, then the worker exits.

    ``stage``: ``"initializer"`` (the pool's initializer raised), ``"start-up"`` (anything
    else before the first Call, e.g. fixtures that do not unpickle), or ``"loop"`` (an
    exception outside any task ended the worker's loop, e.g. a function that does not unpickle
    there). The first two stop the pool: every worker would fail the same way.
    """

    error: ExceptionWithTraceback
    stage: str = "initializer"


class CallFailed(NamedTuple):
    """The worker could not run a Call, or could not answer it, and is still fine: the
    ``edge`` of the Call where it failed (``ARGUMENTS``, ``FUNCTION``, ``RESULT``, or
    ``CALL`` for corral's own code around the tasks) and what was raised, as text, so that
    this message always pickles (the exception may be anything: ``SystemExit`` from an
    argument's ``__setstate__``, an object whose ``__reduce__`` raises)."""

    call_id: int
    edge: str
    error: str
    traceback: str


ARGUMENTS, FUNCTION, CALL, RESULT = "arguments", "function", "call", "result"
"""The edges of a Call, in the order a worker meets them."""

# What a worker's stamp says it is doing (element 0); from 0 up: running that item of its Call.
BETWEEN = -1
"""No item running: waiting for a Call, or in corral's code before or after the items."""
LOADING_ARGS = -2
"""Unpickling the Call (its arguments)."""
LOADING_FUNCTION = -3
"""Unpickling the Call's function(s)."""
SENDING = -4
"""Pickling and sending the Call's Result."""

EDGE_OF_PHASE = {LOADING_ARGS: ARGUMENTS, LOADING_FUNCTION: FUNCTION, SENDING: RESULT}

STAMP_SIZE = 4
"""The doubles of a worker's stamp (``_worker.loop.Stamp``): ``[item index or phase, the
item's monotonic start, call id, items of that Call begun]``; the last tells a death between
two items (index ``BETWEEN``) which items ran."""


class Handover(NamedTuple):
    """The answer to the hand-over signal (Ctrl-C): the finished part of the Call the worker
    was running, as a Result of its first ``len(result.values)`` items (item
    ``len(result.values)`` was running), or ``call_id`` -1 and no result when no Call was
    running. Every Result the worker sent before it comes before it in the pipe."""

    call_id: int
    result: Result | None


STOP = b"stop"
"""Sent as raw bytes: the worker finishes its loop and exits cleanly."""

TEARDOWN = b"teardown:"
"""Sent as raw bytes by a stopping worker, followed by the name of the fixture it is about to
tear down (nothing after the last one): if the worker must be killed for taking longer than
``fixture_teardown_timeout``, the coordinator reads the last one and names the fixture."""


class Ready(NamedTuple):
    """Sent once by a worker when it has started up (initializer run, fixtures unpickled):
    it takes Calls from now on. ``started``: ``time.time()`` when its ``main`` began."""

    pid: int
    started: float


class Logged(NamedTuple):
    """A log record made by a task (``forward_logging``): ``record`` is the ``LogRecord``'s
    ``__dict__`` (its message already formatted when its arguments do not pickle), and
    ``call_id``/``index`` the Call and item that ran when it was logged (-1: between Calls),
    which the coordinator turns into the task's key."""

    call_id: int
    index: int  # type: ignore[assignment]  # shadows tuple.index: never called
    record: dict[str, Any]


class Observe(NamedTuple):
    """What the coordinator asks a worker to keep for it (``_worker.observe``).

    ``stack_path``: faulthandler writes here the traceback of a fatal signal (SIGSEGV,
    SIGABRT, ...), and the stack of every thread when the worker gets ``STACK_SIGNAL`` (asked
    before a timed-out task is killed). ``stdout_path``/``stderr_path`` (``capture_output``):
    the worker's fds 1 and 2 point there, emptied as each item starts, so the coordinator can
    read what a task that died or was killed had written. ``log_levels``
    (``forward_logging``): the coordinator's logger levels (``""`` is the root), None: off."""

    stack_path: str | None = None
    stdout_path: str | None = None
    stderr_path: str | None = None
    output_limit: int = 1 << 20
    log_levels: dict[str, int] | None = None


STACK_SIGNAL = signal.SIGUSR2
"""Asks a worker to write the stack of every thread to its ``stack_path`` (faulthandler)."""
