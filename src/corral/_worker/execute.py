"""Run one Call in this process and describe what happened: the only place user code is called.

Runs in a worker process (``_worker.loop``) or, for the serial backend, in the caller's own process.
Every exception a task raises is caught here and turned into an entry of ``Result.errors``;
nothing a task does can stop the loop over the Call's other items.

Fixtures (``fixtures=``) are injected here too, without this module knowing: the functions
that ``resolve`` returns are bound to the process's fixture cache (``_worker.fixture_cache.Bound``),
so a fixture's set-up runs inside the item that first needs it, and a set-up that raises is
that item's error (a ``FixtureError``), like any exception of the task.

Two loops share that contract. The general one tells an ``ItemWatch`` when each item starts
and ends (the serial backend arms its alarm there; a worker timing a task with a timeout
writes the start time for the coordinator). The fast one, for chunks of tasks without a
timeout, only writes the running item's index to shared memory: a chunk of 20,000 trivial
tasks must cost little more than the calls themselves (see benchmarks S1).

Both loops fill a ``Progress`` in place, so that what a Call has produced so far can be read
at any moment at no cost to the loop: by the worker's hand-over signal handler
(``handover``) and by the serial backend after a KeyboardInterrupt. ``partial_result`` turns
it into the Result of the items that finished.

Effects (``corral.record``, ``_worker.effects``): each Call points the thread's current
Progress at its own and restores it however the loop ends; ``record`` appends to
``progress.effects``, naming its item by ``len(progress.values)`` (the running item, by the
invariant above), so neither loop does anything per item for it. The Result carries the
successful items' effects; a failed item's are dropped here.
"""

from __future__ import annotations

import os
import time
from array import array
from collections.abc import Callable
from typing import Any, Protocol

from .._errors import ExceptionWithTraceback
from .._messages import STAMP_SIZE, Call, Result
from .._platform import max_rss_bytes, rss_bytes
from .._record import Record
from . import effects as _effects
from .meter import Meter

TIMED_ITEMS = 256
"""Chunks up to this size record each item's finish time; longer chunks (of very short tasks)
record only the chunk's start and end, and item times are interpolated when reported."""


class ItemWatch(Protocol):
    """Told when each item of a Call starts, so the coordinator can see which one is running."""

    def start(self, call_id: int) -> None:
        """A new Call starts (its items follow)."""
        ...

    def begin(self, index: int) -> None: ...

    def end(self) -> None: ...

    def index_buffer(self) -> Any:
        """A writable buffer whose element 0 the fast loop sets to the running item's index
        (and, in a worker's stamp, element 3 to the items begun once the loop is over:
        ``_messages.STAMP_SIZE``), or None when this watch needs ``begin``/``end`` for every
        item."""
        ...


class Progress(Record):
    """What a running Call has produced so far, filled in place by the item loops.

    Item ``i`` has finished once ``len(values) > i``: a failing item's ``errors[i]`` is set
    before its placeholder value is appended, and ``finished[i]`` (when kept) is appended
    just after, so a reader that interrupts the loop between two bytecodes sees a consistent
    prefix. Item ``len(values)`` is the one running (if any is left).

    ``effects``: what ``corral.record`` appended while the items ran: ``(item index, effect)``.
    """

    __slots__ = ("call_id", "started", "cpu0", "values", "errors", "finished", "effects")  # noqa: RUF023

    def __init__(
        self,
        call_id: int,
        started: float,
        cpu0: float,
        values: list[Any],
        errors: dict[int, ExceptionWithTraceback],
        finished: array[float] | None,
        effects: list[tuple[int, Any]] | None = None,
    ) -> None:
        self.call_id = call_id
        self.started = started
        self.cpu0 = cpu0
        self.values = values
        self.errors = errors
        self.finished = finished
        self.effects = effects


class Live(Protocol):
    """Told which ``Progress`` the running Call fills (the worker's hand-over handler, the
    serial backend); ``stopped`` when its item loop has ended."""

    def running(self, progress: Progress) -> None: ...

    def stopped(self) -> None: ...


def execute(
    call: Call,
    resolve: Callable[[int], Callable[..., Any]],
    watch: ItemWatch,
    *,
    reraise: tuple[type[BaseException], ...] = (),
    measure_rss: bool = False,
    live: Live | None = None,
    meter: Meter | None = None,
) -> Result:
    """Run every item of ``call`` in order; exceptions become ``Result.errors`` entries.

    ``reraise`` names exception types that must escape (the serial backend lets
    KeyboardInterrupt through so that Ctrl-C stops the caller; a worker ignores SIGINT).
    ``measure_rss`` reads the current resident size for ``max_worker_memory`` (a file read
    per Call, skipped when no limit is set); ``Result.rss`` is 0 otherwise. ``live`` is told
    the Call's ``Progress`` while its items run. ``meter``: measures the Call's CPU
    (children included) and peak memory (``telemetry``); twice per Call, not per item.
    """
    cpu0 = meter.begin() if meter is not None else time.process_time()
    started = time.time()
    watch.start(call.call_id)
    buffer = watch.index_buffer() if call.timeouts is None and not reraise else None
    fast = buffer is not None and not call.star
    timed = not fast or len(call.items) <= TIMED_ITEMS
    progress = Progress(call.call_id, started, cpu0, [], {}, array("d") if timed else None)
    current = _effects.current
    previous, current.progress = current.progress, progress  # corral.record appends there
    if live is not None:
        live.running(progress)
    try:
        if fast:
            _fast(call, resolve(call.fn_id), buffer, progress)
        else:
            _general(call, resolve, watch, reraise, progress)
    finally:
        current.progress = previous
        if live is not None:
            live.stopped()
    ended = time.time()
    log = progress.effects
    if meter is not None:
        cpu, child_cpu, peak_rss = meter.end(ended - started)
        max_rss = meter.lifetime_peak
    else:
        cpu, child_cpu, peak_rss = time.process_time() - cpu0, 0.0, 0
        max_rss = max_rss_bytes()
    return Result(
        call_id=call.call_id,
        values=progress.values,
        errors=progress.errors or None,
        started=started,
        ended=ended,
        finished=progress.finished,
        cpu=cpu,
        max_rss=max_rss,
        rss=rss_bytes() if measure_rss else 0,
        effects=_effects.by_item(log, progress.errors, len(progress.values)) if log else None,
        child_cpu=child_cpu,
        peak_rss=peak_rss,
    )


def partial_result(progress: Progress) -> Result:
    """The Result of the items of ``progress`` that have finished (possibly none)."""
    n = len(progress.values)
    now = time.time()
    finished = None
    if progress.finished is not None:
        finished = array("d", progress.finished[:n])
        while len(finished) < n:  # interrupted between an item's value and its time
            finished.append(now)
    errors = {i: e for i, e in list(progress.errors.items()) if i < n}
    return Result(
        call_id=progress.call_id,
        values=progress.values[:n],
        errors=errors or None,
        started=progress.started,
        ended=now,
        finished=finished,
        cpu=time.process_time() - progress.cpu0,
        max_rss=max_rss_bytes(),
        rss=0,
        effects=_effects.by_item(list(progress.effects), errors, n) if progress.effects else None,
    )


def _fast(call: Call, fn: Callable[[Any], Any], index: Any, progress: Progress) -> None:
    append = progress.values.append
    errors = progress.errors
    finished = progress.finished
    mark = finished.append if finished is not None else None
    now = time.time
    for i, item in enumerate(call.items):
        index[0] = i
        try:
            append(fn(item))
        except BaseException as exc:
            errors[i] = _wrap(exc)  # before the value: see Progress
            append(None)
            del exc
        if mark is not None:
            mark(now())
    if len(index) >= STAMP_SIZE:  # all began: a death from here on lost them all
        index[3] = len(call.items)
    index[0] = -1


def _general(
    call: Call,
    resolve: Callable[[int], Callable[..., Any]],
    watch: ItemWatch,
    reraise: tuple[type[BaseException], ...],
    progress: Progress,
) -> None:
    values, errors = progress.values, progress.errors
    finished = progress.finished
    assert finished is not None
    fn = resolve(call.fn_id) if not call.star else None
    for i, item in enumerate(call.items):
        watch.begin(i)
        try:
            if fn is not None:
                values.append(fn(item))
            else:
                fn_id, args, kwargs = item
                values.append(resolve(fn_id)(*args, **kwargs))
        except reraise:
            watch.end()
            raise
        except BaseException as exc:
            errors[i] = _wrap(exc)  # before the value: see Progress
            values.append(None)
            del exc
        watch.end()
        finished.append(time.time())


_CORRAL = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _wrap(exc: BaseException) -> ExceptionWithTraceback:
    """The task's exception with its traceback, which starts at the user's frame: corral's own
    frames above it (this loop, fixture binding) say nothing about the failure. An error
    raised by corral itself (a fixture's) keeps at least its last frame."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None and _is_corral(tb.tb_frame.f_code):
        tb = tb.tb_next
    exc.__traceback__ = tb
    return ExceptionWithTraceback(exc)


def _is_corral(code: Any) -> bool:
    return str(code.co_filename).startswith(_CORRAL)
