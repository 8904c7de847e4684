"""``on_effect``: the effects tasks record (``corral.record``), replayed in task order on the
caller's thread while the batch runs.

    engine thread                                      caller's thread (map / run / imap)
    ─────────────                                      ──────────────────────────────────
    Batch.finish_ok / _finish ─► sink.ok / failed / given
        ReplayingSink: Replay.put ── (positions, effects) ──► queue ──► Replay.apply:
        (then the sink's own work)     one entry per Call               reorder buffer by
    Engine._complete_if_done ─► sink.close ── None ─────────► queue      position; fn(key, effect)
                                                                         for every position whose
                                                                         predecessors are all final

Where effects travel: the worker keeps each item's log (``_worker.effects``) and sends the
successful items' effects in the Result (``Result.effects``); a failed, timed-out, crashed or
retried attempt's effects never leave the worker (or die with it). The batch's sink is where
every final outcome arrives exactly once (``Positions.finish``), values and cached outcomes
included, so the replay is fed there: one ``queue.put`` per Call, and nothing at all for a
batch without ``on_effect`` (it gets the plain sink). The event stream was the other
candidate; it is pool-wide, costs a call per event, and ``TaskFinished`` carries no effects.

Thread. ``fn`` runs on the caller's thread, the one blocked in ``map``/``run`` (or inside
``next()`` of an ``imap``): it can mutate a live object that is not thread-safe, as long as
the caller's own code is what else touches it, because that code is waiting. With the serial
backend, the same thread also runs the tasks, between them.

Order. Effects are applied in task-submission order (input position), then in the order each
task recorded them. Position p's effects are applied once every position before p is final
(its effects applied, or it failed, or was cancelled): one slow task holds back the replay of
later ones, never their execution. ``imap``: effects are applied while the caller is inside
``next()``; with ``ordered=True``, every effect of the tasks up to a result is applied before
that result is yielded; with ``ordered=False``, a result may come before its effects (an
earlier task still runs). All effects are applied by the time the iterator ends.

Ownership: the engine thread only puts into the queue; the reorder buffer (``cursor``,
``waiting``) is the caller's thread's alone.

An exception from ``fn`` stops the run: no later effect is applied, what has not finished is
cancelled, and ``EffectError`` (naming the task and the effect, the exception as its cause,
the Report attached) is raised to the caller.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ._batch import OkRecord
from ._errors import EffectError
from ._outcome import Outcome
from ._sinks import CollectSink, StreamSink

if TYPE_CHECKING:
    from ._batch import Batch
    from ._drivers import Driver

Entry = tuple[Sequence[int], Sequence[int] | None, dict[int, tuple[Any, ...]] | None]
"""Positions, the offset of each in ``effects`` (None: 0, 1, ...), effects by offset."""


class Replay:
    """The reorder buffer between the engine thread and the caller's ``on_effect``."""

    def __init__(self, fn: Callable[[Any, Any], Any]) -> None:
        self.fn = fn
        self.key_of: Callable[[int], Any] = lambda pos: pos  # the batch's, once it exists
        self.queue: queue.SimpleQueue[Entry | None] = queue.SimpleQueue()
        self.cursor = 0  # every position before it is final and replayed
        self.waiting: dict[int, tuple[Any, ...]] = {}  # final positions past the cursor
        self.error: EffectError | None = None
        self.applied = 0
        # a journaled imap (resume): its journaled items never enter the batch; their
        # effects wait here for the batch position they precede (``hold``)
        self.held: dict[int, list[tuple[Any, tuple[Any, ...]]]] = {}
        self.skipped = 0  # held items replayed: batch position + skipped = input position

    # -- engine thread ----------------------------------------------------------------------
    def put_ok(self, positions: Sequence[int], record: OkRecord) -> None:
        self.queue.put((positions, record.offsets, record.result.effects))

    def put_one(self, pos: int, effects: tuple[Any, ...]) -> None:
        self.queue.put(((pos,), None, {0: effects} if effects else None))

    def close(self) -> None:
        self.queue.put(None)

    # -- caller's thread --------------------------------------------------------------------
    def hold(self, pos: int, outcome: Outcome) -> None:
        """A journaled imap's item taken from the journal (``cached``), read just before the
        batch's position ``pos``: its effects are replayed right before ``pos``'s (a failure
        replays none but still counts in the input positions)."""
        self.held.setdefault(pos, []).append((outcome.key, outcome.effects if outcome.ok else ()))

    def _release(self, pos: int) -> bool:
        for key, effects in self.held.pop(pos, ()):
            self.skipped += 1
            if effects and not self._replay(pos, effects, key):
                return False
        return True

    def _finish(self) -> None:
        """The batch is done: the journaled items after its last position."""
        for pos in sorted(self.held):
            if not self._release(pos):
                return

    def follow(self, driver: Driver, batch: Batch) -> None:
        """Apply effects as tasks finish until the batch is done (or ``fn`` raised)."""
        while True:
            entry = driver.receive(self.queue, batch)
            if entry is None:
                self._finish()
                return
            self.apply(entry)
            if self.error is not None:
                return

    def drain(self) -> None:
        """Apply what has arrived, without waiting (``imap``, between results)."""
        while self.error is None:
            try:
                entry = self.queue.get_nowait()
            except queue.Empty:
                return
            if entry is None:
                self._finish()
                return
            self.apply(entry)

    def apply(self, entry: Entry) -> None:
        if self.error is not None:
            return
        positions, offsets, effects = entry
        if (
            not effects
            and not self.waiting
            and not self.held
            and _starts_at(positions, self.cursor)
        ):
            self.cursor += len(positions)  # a Call of effect-free tasks, in order: no buffer
            return
        waiting = self.waiting
        for i, pos in enumerate(positions):
            offset = offsets[i] if offsets is not None else i
            waiting[pos] = effects.get(offset, ()) if effects else ()
        while self.cursor in waiting:
            pos = self.cursor
            if self.held and not self._release(pos):
                return
            found = waiting.pop(pos)
            self.cursor += 1
            if found and not self._replay(pos, found):
                return

    def _replay(self, pos: int, effects: tuple[Any, ...], key: Any = None) -> bool:
        if key is None:  # (past held items: an imap's keys are its input positions)
            key = self.key_of(pos) if not self.skipped else pos + self.skipped
        for effect in effects:
            try:
                self.fn(key, effect)
            except Exception as exc:
                self.error = EffectError(key, effect, exc)
                return False
            self.applied += 1
        return True


def _starts_at(positions: Sequence[int], cursor: int) -> bool:
    if isinstance(positions, range):
        return positions.start == cursor and positions.step == 1
    return len(positions) == 1 and positions[0] == cursor


class _Feeds:
    """What a replaying sink adds to its base: every final position goes to the replay
    first (so an ``imap`` result never reaches the caller before its effects are queued)."""

    replay: Replay

    def ok(self, positions: Sequence[int], values: list[Any], record: OkRecord) -> None:
        self.replay.put_ok(positions, record)
        super().ok(positions, values, record)  # type: ignore[misc]

    def failed(self, pos: int, outcome: Outcome) -> None:
        self.replay.put_one(pos, ())
        super().failed(pos, outcome)  # type: ignore[misc]

    def given(self, pos: int, outcome: Outcome) -> None:
        # a cached task's effects are its earlier run's (a journal keeps them)
        self.replay.put_one(pos, outcome.effects if outcome.ok else ())
        super().given(pos, outcome)  # type: ignore[misc]

    def close(self) -> None:
        self.replay.close()
        super().close()  # type: ignore[misc]


class ReplayingCollectSink(_Feeds, CollectSink):
    def __init__(self, n: int, replay: Replay) -> None:
        super().__init__(n)
        self.replay = replay


class ReplayingStreamSink(_Feeds, StreamSink):
    def __init__(self, replay: Replay) -> None:
        super().__init__()
        self.replay = replay


def collect_sink(n: int, on_effect: Callable[[Any, Any], Any] | None) -> CollectSink:
    """The sink of a ``map`` or ``run``: replaying effects when ``on_effect`` is given."""
    if on_effect is None:
        return CollectSink(n)
    return ReplayingCollectSink(n, Replay(on_effect))


def stream_sink(on_effect: Callable[[Any, Any], Any] | None) -> StreamSink:
    """The sink of an ``imap``: replaying effects when ``on_effect`` is given."""
    if on_effect is None:
        return StreamSink()
    return ReplayingStreamSink(Replay(on_effect))


def replay_of(sink: Any) -> Replay | None:
    return getattr(sink, "replay", None)
