"""A Pool's journal while it runs: identity and resume of each call, and the sink that
journals what finishes.

    caller thread                                   engine thread        writer thread
    ─────────────                                   ─────────────        ─────────────
    Pool(journal=) ─► Journal: lock, check, run row, Writer ───────────────────► started
    pool.map/run/imap ─► for_map / for_tasks / for_stream:
        digests (identity), Journaled rows (resume) ─► given (cached), changed, interrupted
        JournalSink around the batch's sink ───────► sink.ok / failed ─► put ─► COMMIT
                                                     CallStarted ──────► put ─► COMMIT
                                                     sink.close ─► flush (waits for COMMIT)
    Pool.close ─► Journal.close: flush, run ended, unlock

What corral reports as done is journaled first: a batch's ``close`` (which precedes its
``done_event``, so before ``map``/``run`` return) waits for the commit of everything the
batch wrote; an imap's results reach its queue through the writer, after their commit.
The window in which a coordinator's death loses a finished task is the time from its
Result to that commit (``WriterStats.max_window``).

When a write fails (the journal's disk is full: ``Writer.error``), the run stops: the next
time a batch's sink passes a result on, or one of its Calls starts, ``Journal.stop`` posts
``engine.cancel`` of that batch on the engine's inbox (so it runs on the engine thread, after
the step in progress); the batch ends, and ``check`` raises the JournalError. Finishing the
batch instead would run every remaining task for results that cannot be journaled.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._events import CallStarted, Events
from .._outcome import Outcome, Status
from . import identity, store
from .resume import Journaled, Resumed, resume
from .writer import Writer, WriterStats

log = logging.getLogger("corral")


@dataclass(frozen=True)
class JournalSummary:
    """What the journal did for one call (``Report.journal``).

    Attributes:
        path: the journal file.
        call: which journaled call of the run this was (0 for the first).
        cached: tasks taken from the journal, not run.
        changed: ``(key, what)`` of journaled tasks that ran again because their function or
            arguments changed (``what``: "function", "arguments", "function and arguments").
        interrupted: keys of tasks that were running when an earlier run stopped.
        rerun_failed: keys of journaled failures that ran again.
    """

    path: Path
    call: int
    cached: int
    changed: tuple[tuple[Any, str], ...]
    interrupted: tuple[Any, ...]
    rerun_failed: tuple[Any, ...]


class Journal:
    """One Pool's journal, open for writing from the Pool's start to its close."""

    def __init__(self, path: str | os.PathLike[str], code: str, inputs: str,
                 rerun_failed: bool) -> None:  # fmt: skip
        self.path = Path(os.fspath(path)).absolute()
        self.code, self.inputs, self.rerun_failed = code, inputs, rerun_failed
        self._lock = store.Lock(self.path)
        self._lock.acquire()  # first: a second writer learns who writes, nothing else
        try:
            with store.opening(self.path):  # a full disk: JournalError, before any work
                store.check(self.path, create=True)
                conn = store.connect(self.path)
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                cur = conn.execute(
                    "INSERT INTO runs(pid, host, started) VALUES (?, ?, ?)",
                    (os.getpid(), os.uname().nodename, time.time()),
                )
            self.run = int(cur.lastrowid or 0)
        except BaseException:
            self._lock.release()
            raise
        self._conn = conn
        self.writer = Writer(conn, self.path, self.run)
        self._numbers = itertools.count()
        self._by_batch: dict[int, JournalBatch] = {}  # id(Batch) → its JournalBatch
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()
        self._engine: Any = None  # what cancels a batch once the journal cannot be written
        self.closed = False

    @property
    def stats(self) -> WriterStats:
        return self.writer.stats

    def attach(self, events: Events, engine: Any = None) -> None:
        """Record starts: one ``CallStarted`` per Call, put on the writer's queue. ``engine``
        (its ``post`` and ``cancel``): what stops a batch once the journal cannot be written."""
        events.subscribe_calls(self._on_call)
        self._engine = engine

    def _on_call(self, event: CallStarted) -> None:
        jb = self._by_batch.get(event.batch)
        if jb is not None:
            self.writer.put(("start", jb, event.positions, event.worker, event.pid,
                             event.attempts, event.time))  # fmt: skip
            if self.writer.error is not None:
                self.stop(jb)

    def stop(self, jb: JournalBatch) -> None:
        """The journal cannot be written (``Writer.error``): cancel ``jb``'s batch, once.
        Engine thread only (a sink, a CallStarted): the cancel is posted on the engine's inbox,
        which runs after the message being handled; no wake-up is needed."""
        engine, batch = self._engine, jb.batch
        if engine is None or batch is None or jb.stopping:
            return
        jb.stopping = True
        log.error("corral: journal %s: cannot be written: the run stops", self.path)
        engine.post(functools.partial(engine.cancel, batch), _nothing)

    # -- one call ---------------------------------------------------------------------------
    def _journaled(self, number: int, kind: str) -> Journaled:
        if self._reader is None:  # one read connection for the run's calls (caller threads)
            self._reader = store.connect(self.path, readonly=True)
        with self._reader_lock:
            journaled = Journaled(self._reader, self.path, number, kind, self.run)
        journaled.ignore_fn = self.code == "ignore"
        return journaled

    def for_map(self, fn: Callable[..., Any], items: Sequence[Any]) -> JournalBatch:
        number = next(self._numbers)
        label = identity.fn_identity(fn, self.code)
        identity.check_inputs(items, range(len(items)), self.inputs)
        jb = JournalBatch(number, "map", label, identity.fn_digest(label), items, None,
                          self.inputs)  # fmt: skip
        return self._start(jb, resume(self._journaled(number, "map"), jb, self.rerun_failed))

    def for_tasks(self, tasks: Sequence[Any]) -> JournalBatch:
        number = next(self._numbers)
        labels: dict[Any, bytes] = {}
        fds = []
        for task in tasks:
            fd = labels.get(task.fn)
            if fd is None:
                fd = labels[task.fn] = identity.fn_digest(identity.fn_identity(task.fn, self.code))
            fds.append(fd)
        keys = [pos if t.key is None else t.key for pos, t in enumerate(tasks)]
        calls = [(t.args, t._kwargs) for t in tasks]
        identity.check_inputs(calls, keys, self.inputs)
        names = sorted({identity.fn_identity(t.fn, "name") for t in tasks})
        label = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        jb = JournalBatch(number, "tasks", label, fds, calls, keys, self.inputs)
        return self._start(jb, resume(self._journaled(number, "tasks"), jb, self.rerun_failed))

    def for_stream(
        self,
        fn: Callable[..., Any],
        source: Iterator[Any],
        ordered: bool,
        present: Callable[[Outcome], Any],
        on_given: Callable[[int, Outcome], None] | None = None,
    ) -> tuple[JournalBatch, Iterator[Any], Callable[[Iterator[Any]], Iterator[Any]]]:
        """An imap's journal: ``(jb, to_run, merge)``. ``to_run`` reads ``source`` lazily and
        yields the items that must run (the journaled ones are held back, with their outcome);
        ``merge(results)`` puts the journaled outcomes back among the results of the items
        that ran (in input order when ``ordered``); ``present`` turns a journaled outcome into
        what imap yields (its value, a Failure, or its error raised). ``on_given(pos,
        outcome)``: a journaled item was held back just before the batch's position ``pos``
        (called on the thread reading ``to_run``: the effects' replay, ``Replay.hold``)."""
        number = next(self._numbers)
        label = identity.fn_identity(fn, self.code)
        fd = identity.fn_digest(label)
        journaled = self._journaled(number, "map")
        jb = JournalBatch(number, "map", label, fd, {}, {}, self.inputs)
        jb.journal = self
        out = jb.resumed
        order: collections.deque[Outcome | None] = collections.deque()
        inputs, rerun_failed = self.inputs, self.rerun_failed
        check_inputs, match = identity.check_inputs, journaled.match

        def to_run() -> Iterator[Any]:
            inner = 0
            calls, keys = jb.calls, jb.keys
            assert isinstance(calls, dict) and isinstance(keys, dict)
            for orig, item in enumerate(source):
                check_inputs((item,), (orig,), inputs)  # names an unstable item
                outcome = match(orig, fd, item, rerun_failed, out) if journaled.rows else None
                if outcome is not None:
                    out.given[orig] = outcome
                    order.append(outcome)
                    if on_given is not None:
                        on_given(inner, outcome)
                    continue
                calls[inner] = item
                keys[inner] = orig
                inner += 1
                if ordered:
                    order.append(None)
                yield item
            journaled.check_same_batch(out)

        def merge(results: Iterator[Any]) -> Iterator[Any]:
            results = iter(results)
            while True:
                while order and order[0] is not None:
                    yield present(order.popleft())  # type: ignore[arg-type]
                try:
                    value = next(results)
                except StopIteration:
                    while order:
                        outcome = order.popleft()
                        if outcome is not None:
                            yield present(outcome)
                    return
                while ordered and order and order[0] is not None:
                    yield present(order.popleft())  # type: ignore[arg-type]
                if ordered:
                    order.popleft()
                yield value

        out.interrupted = [key for key, _ in journaled.interrupted]
        return self._start(jb, out), to_run(), merge

    def _start(self, jb: JournalBatch, resumed: Resumed) -> JournalBatch:
        jb.resumed = resumed
        jb.journal = self
        self.writer.put(("batch", jb.number, jb.kind, jb.label, self.run))
        now = time.time()
        for key in resumed.interrupted:
            self.writer.put(("mark", jb.number, None, store.dumps(key), "interrupted", now,
                             None))  # fmt: skip
        if resumed.interrupted:
            log.info(
                "corral: journal %s: %d task(s) were running when an earlier run stopped; "
                "they run again", self.path, len(resumed.interrupted),
            )  # fmt: skip
        if resumed.changed:
            shown = ", ".join(f"{k!r} ({what})" for k, what in resumed.changed[:5])
            more = f" and {len(resumed.changed) - 5} more" if len(resumed.changed) > 5 else ""
            log.warning(
                "corral: journal %s: %d journaled task(s) run again because their call "
                "changed: %s%s", self.path, len(resumed.changed), shown, more,
            )  # fmt: skip
        return jb

    def bind(self, jb: JournalBatch, batch: Any) -> None:
        """``batch`` is ``jb``'s: its Calls' starts are journaled (until it is done)."""
        self._by_batch[id(batch)] = jb
        jb.batch_id = id(batch)
        jb.batch = batch

    def unbind(self, jb: JournalBatch) -> None:
        self._by_batch.pop(jb.batch_id, None)
        jb.batch = None

    def check(self) -> None:
        """Raise JournalError if a write failed (after a flush)."""
        self.writer.flush()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.writer.close()
            if self._reader is not None:
                self._reader.close()
            try:
                self._conn.execute(
                    "UPDATE runs SET ended = ? WHERE run = ?", (time.time(), self.run)
                )
            except sqlite3.Error as exc:  # a full disk: the writer's error says it already
                log.warning("corral: journal %s: the run's end not recorded: %s", self.path, exc)
            self._conn.close()
        finally:
            self._lock.release()


class JournalBatch:
    """The journal's view of one call: each position's call and key, what resume found.

    ``fns``: the function's hash (a map, an imap), or each task's; ``calls``: what each
    position's arguments are (a map's items; a run's ``(args, kwargs)``; an imap's items by
    position, dropped once journaled); ``keys``: a position's key where it is not the
    position itself (a run; an imap, whose batch positions skip the journaled items)."""

    def __init__(
        self,
        number: int,
        kind: str,
        label: str,
        fns: bytes | list[bytes],
        calls: Sequence[Any] | dict[int, Any],
        keys: Sequence[Any] | dict[int, Any] | None,
        inputs: str,
    ) -> None:
        self.number = number
        self.kind = kind
        self.label = label
        self.fns = fns
        self.calls = calls
        self.keys = keys
        self.inputs = inputs
        self.resumed = Resumed()
        self.journal: Journal | None = None
        self.batch_id = 0
        self.batch: Any = None  # while bound: the Batch the engine runs (``Journal.stop``)
        self.stopping = False
        self._positions: dict[Any, int] | None = None

    # -- as resume asks (``resume.Now``): the batch about to run -------------------------------
    @property
    def keys_are_positions(self) -> int:
        return len(self.calls) if self.keys is None else 0

    def position(self, key: Any) -> int | None:
        if self.keys is None:
            return key if type(key) is int and 0 <= key < len(self.calls) else None
        if self._positions is None:
            self._positions = {k: p for p, k in enumerate(self.keys)}
        return self._positions.get(key)

    def fn_part(self, positions: Sequence[int]) -> bytes:
        fns = self.fns
        return fns if isinstance(fns, bytes) else b"".join([fns[p] for p in positions])

    def calls_of(self, positions: Sequence[int]) -> list[Any]:
        calls = self.calls
        if isinstance(positions, range) and isinstance(calls, list):
            return calls[positions.start : positions.stop]
        return [calls[p] for p in positions]

    # -- as the writer asks ------------------------------------------------------------------
    def identity_of(self, positions: Sequence[int]) -> tuple[bytes, bytes]:
        """The digest and detail of a Call of these positions (``identity.call_digest``)."""
        return identity.call_digest(self.fn_part(positions), self.calls_of(positions), self.inputs)

    def forget(self, positions: Any) -> None:
        """An imap's positions are journaled as finished: their calls and keys are dropped
        (a stream keeps bounded memory)."""
        if isinstance(self.calls, dict):
            for p in positions:
                self.calls.pop(p, None)
                self.keys.pop(p, None)  # type: ignore[union-attr]

    def keys_of(self, positions: Any) -> list[Any] | None:
        keys = self.keys
        return None if keys is None else [keys[p] for p in positions]

    def summary(self) -> JournalSummary:
        r = self.resumed
        path = self.journal.path if self.journal is not None else Path()
        return JournalSummary(
            path, self.number, len(r.given), tuple(r.changed), tuple(r.interrupted),
            tuple(r.rerun),
        )  # fmt: skip

    def sink(self, inner: Any, gated: bool) -> JournalSink:
        assert self.journal is not None
        return JournalSink(inner, self, self.journal.writer, gated)


class JournalSink:
    """Around a batch's sink: journals each success (one op per Call) and each failure, then
    passes it on; ``gated`` (imap): passes it on only after its commit, through the writer.
    ``close`` waits for the commit of everything the batch wrote."""

    def __init__(self, inner: Any, jb: JournalBatch, writer: Writer, gated: bool) -> None:
        self.inner = inner
        self.claims = getattr(inner, "claims", False)
        self._jb = jb
        self._writer = writer
        self._put = writer.put
        self._gated = gated

    def claim(self, pos: int) -> bool:
        return bool(self.inner.claim(pos))

    def _stop(self) -> None:
        if self._jb.journal is not None:
            self._jb.journal.stop(self._jb)

    def ok(self, positions: Sequence[int], values: list[Any], record: Any) -> None:
        self._put(("ok", self._jb, positions, values, record, _effects(record), time.time()))
        if self._writer.error is not None:
            self._stop()
        if self._gated:
            self._put(("call", lambda: self.inner.ok(positions, values, record)))
        else:
            self.inner.ok(positions, values, record)

    def failed(self, pos: int, outcome: Outcome) -> None:
        if outcome.status is not Status.CANCELLED:  # a cancelled task did not end: not final
            self._put(("fail", self._jb, pos, outcome, time.time()))
            if self._writer.error is not None:
                self._stop()
        elif self._jb.stopping and self._writer.error is not None:
            # cancelled by ``_stop``: its error says why (an imap raises it for its item)
            outcome = dataclasses.replace(outcome, error=self._writer.journal_error())
        if self._gated:
            self._put(("call", lambda: self.inner.failed(pos, outcome)))
        else:
            self.inner.failed(pos, outcome)

    def given(self, pos: int, outcome: Outcome) -> None:
        if self._gated:
            self._put(("call", lambda: self.inner.given(pos, outcome)))
        else:
            self.inner.given(pos, outcome)

    def close(self) -> None:
        if self._gated:
            self._put(("call", self.inner.close))
        else:
            self.inner.close()
        done = _Flag()
        self._put(("call", done.set))
        done.wait()  # the batch is done once its journal is committed (errors: at the end)
        if self._jb.journal is not None:
            self._jb.journal.unbind(self._jb)


def _nothing() -> None:
    pass


class _Flag:
    def __init__(self) -> None:
        self._event = threading.Event()
        self.set = self._event.set
        self.wait = self._event.wait


def _effects(record: Any) -> dict[int, tuple[Any, ...]] | None:
    """What the tasks of a successful Call recorded (``corral.record``), by offset in the
    row's positions (the Result's ``effects`` are by item index: ``record.offsets`` maps
    one to the other); None when none recorded anything (the usual case: nothing stored).
    Journaled so that a resumed run replays them (``resume._ok_outcome``, ``_take_row``)."""
    effects = getattr(record.result, "effects", None)
    if not effects:
        return None
    offsets = record.offsets
    if offsets is None:  # positions[i] is item i
        return dict(effects)
    out = {i: effects[item] for i, item in enumerate(offsets) if item in effects}
    return out or None
