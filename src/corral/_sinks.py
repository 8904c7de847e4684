"""Where a batch's finished results go: its ``Sink`` (the protocol is in ``_batch``).

    CollectSink  map / run: a list of values plus what is needed to build the Report lazily
    StreamSink   imap: a thread-safe queue the caller's iterator reads; nothing is kept
    FutureSink   submit: one concurrent.futures.Future

Called on the engine thread as positions become final (``Batch.finish_ok`` and
``Batch._finish``); read by the caller's thread once the batch's ``done_event`` is set (or,
for a stream, from its queue). ``ok_outcome`` builds an ok task's Outcome from its Call's
Result, lazily: a ``map`` of 20,000 trivial tasks never builds one.
"""

from __future__ import annotations

import contextlib
import logging
import queue
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from typing import Any

from ._batch import Batch, OkRecord, item_times
from ._errors import CorralError
from ._messages import NO_OUTPUT
from ._outcome import Attempt, Outcome, Status, result_of
from ._positions import CACHED, CANCELLED, FAILED, OK
from ._report.report import Report
from ._report.telemetry import WorkerLog


def ok_outcome(batch: Batch, pos: int, value: Any, record: OkRecord, offset: int) -> Outcome:
    result = record.result
    started, finished = item_times(result, offset)
    attempts = record.attempts.get(pos, 1) if record.attempts else 1
    n = len(result.values)
    cpu = (result.cpu + result.child_cpu) / n if n else 0.0
    # Built for every task of a Report: a plain tuple of the fields, not the named tuple's
    # keyword-taking constructor (a third of the cost).
    this = tuple.__new__(
        Attempt,
        (
            record.worker,
            record.pid,
            started,
            finished,
            Status.OK,
            None,
            batch.queued_of(pos),
            cpu,
            result.peak_rss or result.max_rss,
            None,
            None,
        ),
    )
    earlier = batch.positions.earlier.get(pos) if batch.positions.earlier else None
    output = result.output.get(offset, NO_OUTPUT) if result.output is not None else None
    return Outcome(
        key=batch.key_of(pos),
        status=Status.OK,
        value=value,
        attempts=attempts,
        worker=record.worker,
        pid=record.pid,
        started=started,
        finished=finished,
        cpu_seconds=cpu,
        max_rss=result.max_rss,
        group=batch.group_of(pos),
        history=(*earlier, this) if earlier else (this,),
        effects=result.effects.get(offset, ()) if result.effects else (),
        stdout=output[0] if output else None,
        stderr=output[1] if output else None,
    )


class CollectSink:
    """Keeps every value in position order, and what is needed to build Outcomes on demand.

    Building 20,000 Outcome objects costs more than running 20,000 trivial tasks, so
    ``map`` reads ``values`` directly and the Report builds Outcomes only when asked.
    """

    def __init__(self, n: int) -> None:
        self.values: list[Any] = [None] * n
        self.records: list[OkRecord] = []
        self.failures: dict[int, Outcome] = {}
        self.cached: dict[int, Outcome] = {}  # given up front, successful

    def claim(self, pos: int) -> bool:
        return True

    def ok(self, positions: Sequence[int], values: list[Any], record: OkRecord) -> None:
        if isinstance(positions, range) and len(values) == len(positions):
            self.values[positions.start : positions.stop] = values
        else:
            for pos, value in zip(positions, values, strict=False):
                self.values[pos] = value
        self.records.append(record)

    def failed(self, pos: int, outcome: Outcome) -> None:
        self.failures[pos] = outcome
        self.values[pos] = result_of(outcome)

    def given(self, pos: int, outcome: Outcome) -> None:
        if outcome.ok:
            self.cached[pos] = outcome
            self.values[pos] = outcome.value
        else:
            self.failed(pos, outcome)

    def close(self) -> None:
        pass

    def validate(self, batch: Batch) -> None:
        """Each final position has exactly one outcome here, of the kind its state says."""
        state = batch.positions.state
        seen = [p for record in self.records for p in record.positions]
        if len(set(seen)) != len(seen) or any(state[p] != OK for p in seen):
            raise AssertionError("a successful position is recorded twice, or is not ok")
        if set(seen) & (self.failures.keys() | self.cached.keys()):
            raise AssertionError("a position has both a value and another outcome")
        for pos in self.cached:
            if state[pos] != CACHED:
                raise AssertionError(f"position {pos} has a cached outcome but is not cached")
        for pos in self.failures:
            if state[pos] not in (FAILED, CANCELLED, CACHED):
                raise AssertionError(f"position {pos} has a failure but is not final")

    def outcomes(self, batch: Batch) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * batch.n
        for record in self.records:
            offsets = record.offsets or range(len(record.positions))
            for pos, offset in zip(record.positions, offsets, strict=False):
                outcomes[pos] = ok_outcome(batch, pos, self.values[pos], record, offset)
        for pos, outcome in self.failures.items():
            outcomes[pos] = outcome
        for pos, outcome in self.cached.items():
            outcomes[pos] = outcome
        missing = [i for i, o in enumerate(outcomes) if o is None]
        for pos in missing:
            outcomes[pos] = Outcome(
                key=batch.key_of(pos), status=Status.CANCELLED, group=batch.group_of(pos)
            )
        return outcomes  # type: ignore[return-value]

    def report(
        self, batch: Batch, wall: float, workers: int, log: WorkerLog | None = None
    ) -> Report:
        """The Report of ``batch``; ``log``: the pool's worker log (``_report.telemetry``),
        from which the lives of the workers during the run are taken."""
        start = batch.queued_at
        return Report(
            self.outcomes(batch),
            wall_seconds=wall,
            workers=workers,
            started=start,
            worker_spans=log.spans(start, start + wall) if log is not None else (),
            happenings=log.happenings(start, start + wall) if log is not None else (),
            drained=batch.drained,
        )


OK_CHUNK: Any = object()
"""Third element of a ``StreamSink`` entry ``(positions, values, OK_CHUNK)``: the successful
values of several positions (one Call's), in one entry."""


class StreamSink:
    """Hands each finished position to the caller's iterator through a queue; keeps nothing."""

    def __init__(self) -> None:
        # (position, value, outcome or None), or (positions, values, OK_CHUNK); None: the end
        self.queue: queue.SimpleQueue[tuple[Any, Any, Any] | None] = queue.SimpleQueue()

    def claim(self, pos: int) -> bool:
        return True

    def ok(self, positions: Sequence[int], values: list[Any], record: OkRecord) -> None:
        # One entry for the Call's values, not one per item: a queue operation per task
        # was most of imap's cost for short tasks.
        self.queue.put((list(positions), values, OK_CHUNK))

    def failed(self, pos: int, outcome: Outcome) -> None:
        self.queue.put((pos, None, outcome))

    def given(self, pos: int, outcome: Outcome) -> None:
        self.queue.put((pos, outcome.value, None) if outcome.ok else (pos, None, outcome))

    def close(self) -> None:
        self.queue.put(None)


class FutureSink:
    """Completes one standard Future (``Pool.submit`` and ``Executor``)."""

    claims = True

    def __init__(self, future: Future[Any]) -> None:
        self.future = future

    def claim(self, pos: int) -> bool:
        # A future is set running once: claimed already, it was sent to a worker that died
        # before starting it (or was queued behind a Call that crashed) and is sent again.
        if self.future.running():
            return True
        return self.future.set_running_or_notify_cancel()

    def ok(self, positions: Sequence[int], values: list[Any], record: OkRecord) -> None:
        with _callbacks_guarded(self.future):
            self.future.set_result(values[0])

    def failed(self, pos: int, outcome: Outcome) -> None:
        if self.future.done():
            return
        if not self.future.running() and not self.future.set_running_or_notify_cancel():
            return
        with _callbacks_guarded(self.future):
            self.future.set_exception(outcome.error)

    def given(self, pos: int, outcome: Outcome) -> None:
        if not outcome.ok:
            self.failed(pos, outcome)
        elif self.future.set_running_or_notify_cancel():
            with _callbacks_guarded(self.future):
                self.future.set_result(outcome.value)

    def close(self) -> None:
        if not self.future.done():  # only when the engine itself failed
            error = CorralError("the corral engine stopped before this task ran")
            with _callbacks_guarded(self.future):
                if self.future.set_running_or_notify_cancel():
                    self.future.set_exception(error)


@contextlib.contextmanager
def _callbacks_guarded(future: Future[Any]) -> Iterator[None]:
    """Completing a future runs its done callbacks, on the engine thread. ``concurrent.futures``
    logs what they raise, but not a BaseException (``sys.exit()`` in a callback): that would
    end the engine thread, so it is logged here. The future is complete either way."""
    try:
        yield
    except BaseException:
        if not future.done():
            raise
        logging.getLogger("corral").exception("a done callback of a corral future raised")
