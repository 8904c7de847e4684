"""The iterator behind ``imap``: feeds the engine from the caller's iterable in a bounded
window, and yields results as they come (in input order, or as finished).

Runs on the caller's thread. It posts parts of the input to the engine thread
(``Engine.extend``) and reads the batch's ``StreamSink`` queue; effects (``on_effect``) are
applied here before each result is yielded. The window starts small (an endless generator
streams in bounded memory) and grows, once tasks have been timed, to keep every worker busy
(``_imap_window``).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Generator, Iterable, Iterator
from itertools import islice, repeat
from typing import TYPE_CHECKING, Any, cast

from . import _signals
from ._batch import CHUNK_TARGET_SECONDS, Batch
from ._effects import replay_of
from ._errors import CorralError
from ._options import (
    RunOptions,
)
from ._outcome import Outcome, result_of
from ._sinks import OK_CHUNK, StreamSink

FALLBACK = "serial"
"""The backend a Pool runs on when its worker processes cannot be started at all."""

if TYPE_CHECKING:
    from ._pool import Pool
    from ._report.error_dir import CallOf


class Results(itertools.chain):  # type: ignore[type-arg]
    """What ``imap`` returns: the values of the runs ``_runs`` yields, one by one. A chain
    hands out each value in C; a generator that yields every value itself costs a frame
    resumption per value, a good part of ``imap``'s time for trivial tasks (benchmark S6)."""

    _runs: Generator[list[Any], None, None]

    def close(self) -> None:
        """Stop early: what is left of the batch is cancelled (as for a generator)."""
        self._runs.close()


def stream(
    pool: Pool,
    batch: Batch,
    sink: StreamSink,
    source: Iterator[Any],
    ordered: bool,
    options: RunOptions,
    call_of: CallOf,
) -> Iterator[Any]:
    """The iterator behind ``imap`` (see ``_runs``)."""
    runs = _runs(pool, batch, sink, source, ordered, options, call_of)
    results = cast(Results, Results.from_iterable(runs))  # (a classmethod: of this class)
    results._runs = runs
    return results


def _runs(
    pool: Pool,
    batch: Batch,
    sink: StreamSink,
    source: Iterator[Any],
    ordered: bool,
    options: RunOptions,
    call_of: CallOf,
) -> Generator[list[Any], None, None]:
    """Lists of ``imap``'s next values, in order: keeps at most ``window`` tasks submitted
    but not yet yielded, so an endless generator streams in bounded memory. Effects
    (``on_effect``) are applied here, on the caller's thread, before each result is yielded
    (``_effects``)."""
    chunk = options.chunksize if options.chunksize != "auto" else 64
    window = max(256, 4 * pool.workers * chunk)
    adaptive = options.chunksize == "auto"
    submitted = yielded = 0
    exhausted = False
    pending: dict[int, tuple[Any, Any]] = {}  # by position: (value, outcome), or a run
    next_pos = 0

    def feed(limit: int) -> None:
        nonlocal submitted, exhausted
        wanted = max(0, limit - (submitted - yielded)) if not exhausted else 0
        items = list(islice(source, wanted))  # (the generator's own errors propagate)
        exhausted = exhausted or len(items) < wanted
        submitted += len(items)
        done = exhausted
        pool._post(functools.partial(pool.engine.extend, batch, items, done))

    def receive() -> tuple[Any, Any, Any] | None:
        if not sink.queue.empty():
            return sink.queue.get()
        try:
            with _signals.terminating():  # only around a wait: never in the caller's code
                entry: tuple[Any, Any, Any] | None = pool._driver.receive(sink.queue, batch)
                return entry
        except _signals.Terminated as terminated:
            _signals.die(terminated.signum)

    replay = replay_of(sink)
    if replay is not None:
        replay.key_of = batch.key_of
    reports = pool._error_reports(batch, options, call_of)
    complete = False
    pool._post(functools.partial(pool.engine.accept, batch))
    try:
        feed(window)
        while True:
            entry = receive()
            if replay is not None:
                replay.drain()  # what finished up to this entry (queued before it)
                if replay.error is not None:
                    raise replay.error
            if entry is None:
                if pool.engine.fatal is not None:  # not a normal end: the engine failed
                    raise CorralError(
                        f"the corral engine failed: {pool.engine.fatal!r}"
                    ) from pool.engine.fatal
                complete = True
                break
            pos, value, outcome = entry
            finished: Iterable[tuple[int, Any, Any]]
            if outcome is OK_CHUNK and (not ordered or _run(pos)):
                # A Call's values for consecutive positions (or any, unordered): they go
                # out, or wait, as one run: no per-item bookkeeping.
                finished = ((pos[0], value, OK_CHUNK),)
            elif outcome is OK_CHUNK:
                finished = zip(pos, value, repeat(None))
            else:
                finished = ((pos, value, outcome),)
            for pos, value, outcome in finished:
                if not ordered:
                    if outcome is OK_CHUNK:
                        yielded += len(value)
                        yield value
                    else:
                        yielded += 1
                        yield [value_or_raise(value, outcome, options)]
                    continue
                pending[pos] = (value, outcome)
                while next_pos in pending:
                    value, outcome = pending.pop(next_pos)
                    if outcome is OK_CHUNK:
                        yielded += len(value)
                        next_pos += len(value)
                        yield value
                    else:
                        yielded += 1
                        next_pos += 1
                        yield [value_or_raise(value, outcome, options)]
            # (refilled for ordered and unordered streams alike: an unordered one used to
            # skip this and stall once its first window was yielded)
            if not exhausted and submitted - yielded < window // 2:
                if adaptive:
                    window = _imap_window(batch, pool.workers, window)
                feed(window)
    finally:
        if not batch.done_event.is_set():
            pool._driver.abandon(batch)
        if reports is not None:
            reports.finish(complete)


def _run(positions: list[int]) -> bool:
    """Whether ``positions`` are consecutive and ascending (a chunk: they usually are)."""
    return bool(positions) and positions == list(range(positions[0], positions[0] + len(positions)))


IMAP_WINDOW_MAX = 1 << 16
"""Most items ``imap`` keeps submitted but not yet yielded (``chunksize="auto"``)."""

IMAP_WINDOW_BYTES = 32 << 20
"""Most pickled argument bytes ``imap`` keeps submitted but not yet yielded."""


def _imap_window(batch: Batch, workers: int, window: int) -> int:
    """How many items ``imap`` keeps in flight: at first 512, so that an endless generator
    of anything streams in bounded memory; once tasks have been timed and their arguments
    pickled, enough for four full chunks per worker (``CHUNK_TARGET_SECONDS`` each: the
    chunks a list would get), within ``IMAP_WINDOW_MAX`` items and ``IMAP_WINDOW_BYTES`` of
    pickled arguments. Never smaller than the first window. Read on the caller's thread
    while the engine thread updates the figures: a momentary estimate is all it needs."""
    mean, items = batch.mean_duration(), batch.argument_items
    if mean is None or not items:
        return window
    per_item = max(1.0, batch.argument_bytes / items)
    wanted = 4 * workers * CHUNK_TARGET_SECONDS / max(mean, 1e-9)
    return max(window, int(min(wanted, IMAP_WINDOW_MAX, IMAP_WINDOW_BYTES / per_item)))


def value_or_raise(value: Any, outcome: Outcome | None, options: RunOptions) -> Any:
    """What ``imap`` yields for one task: its value, its Failure, or (errors="raise") its error."""
    if outcome is None:
        return value
    if options.errors == "raise" and outcome.error is not None:
        raise outcome.error
    return result_of(outcome)
