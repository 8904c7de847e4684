"""Run one Call in this process and describe what happened: the only place user code is called.

Runs in a worker process (``_worker``) or, for the serial backend, in the caller's own process.
Every exception a task raises is caught here and turned into an entry of ``Result.errors``;
nothing a task does can stop the loop over the Call's other items.

Fixtures (``fixtures=``) are injected here too, without this module knowing: the functions
that ``resolve`` returns are bound to the process's fixture cache (``_fixture_cache.Bound``),
so a fixture's set-up runs inside the item that first needs it, and a set-up that raises is
that item's error (a ``FixtureError``), like any exception of the task.

Two loops share that contract. The general one tells an ``ItemWatch`` when each item starts
and ends (the serial backend arms its alarm there; a worker timing a task with a timeout
writes the start time for the coordinator). The fast one, for chunks of tasks without a
timeout, only writes the running item's index to shared memory: a chunk of 20,000 trivial
tasks must cost little more than the calls themselves (see benchmarks S1).
"""

from __future__ import annotations

import os
import time
from array import array
from collections.abc import Callable
from typing import Any, Protocol

from ._errors import ExceptionWithTraceback
from ._messages import Call, Result
from ._platform import max_rss_bytes, rss_bytes

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
        """A writable buffer whose element 0 the fast loop sets to the running item's index,
        or None when this watch needs ``begin``/``end`` for every item."""
        ...


def execute(
    call: Call,
    resolve: Callable[[int], Callable[..., Any]],
    watch: ItemWatch,
    *,
    reraise: tuple[type[BaseException], ...] = (),
    measure_rss: bool = False,
) -> Result:
    """Run every item of ``call`` in order; exceptions become ``Result.errors`` entries.

    ``reraise`` names exception types that must escape (the serial backend lets
    KeyboardInterrupt through so that Ctrl-C stops the caller; a worker ignores SIGINT).
    ``measure_rss`` reads the current resident size for ``max_worker_memory`` (a file read
    per Call, skipped when no limit is set); ``Result.rss`` is 0 otherwise.
    """
    started = time.time()
    cpu0 = time.process_time()
    watch.start(call.call_id)
    buffer = watch.index_buffer() if call.timeouts is None and not reraise else None
    if buffer is not None and not call.star:
        values, errors, finished = _fast(call, resolve(call.fn_id), buffer)
    else:
        values, errors, finished = _general(call, resolve, watch, reraise)
    ended = time.time()
    return Result(
        call_id=call.call_id,
        values=values,
        errors=errors,
        started=started,
        ended=ended,
        finished=finished,
        cpu=time.process_time() - cpu0,
        max_rss=max_rss_bytes(),
        rss=rss_bytes() if measure_rss else 0,
    )


Outcomes = tuple[list[Any], dict[int, ExceptionWithTraceback] | None, "array[float] | None"]


def _fast(call: Call, fn: Callable[[Any], Any], index: Any) -> Outcomes:
    values: list[Any] = []
    append = values.append
    errors: dict[int, ExceptionWithTraceback] | None = None
    finished = array("d") if len(call.items) <= TIMED_ITEMS else None
    mark = finished.append if finished is not None else None
    now = time.time
    for i, item in enumerate(call.items):
        index[0] = i
        try:
            append(fn(item))
        except BaseException as exc:
            append(None)
            if errors is None:
                errors = {}
            errors[i] = _wrap(exc)
            del exc
        if mark is not None:
            mark(now())
    index[0] = -1
    return values, errors, finished


def _general(
    call: Call,
    resolve: Callable[[int], Callable[..., Any]],
    watch: ItemWatch,
    reraise: tuple[type[BaseException], ...],
) -> Outcomes:
    values: list[Any] = []
    errors: dict[int, ExceptionWithTraceback] | None = None
    finished = array("d")
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
            values.append(None)
            if errors is None:
                errors = {}
            errors[i] = _wrap(exc)
            del exc
        watch.end()
        finished.append(time.time())
    return values, errors, finished


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
