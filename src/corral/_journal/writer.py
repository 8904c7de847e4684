"""The journal's writer thread: every write, batched into few transactions, off the engine.

    engine thread                    writer thread ("corral journal writer")
    ─────────────                    ──────────────────────────────────────
    CallStarted ─► put(start) ──┐
    sink.ok ────► put(ok) ──────┤    get() one op, then everything already queued (≤ MAX_OPS)
    sink.failed ► put(fail) ────┼─►  pickle, digest, rows ─► BEGIN; INSERT ...; COMMIT
    release ────► put(call) ────┤    then, in order, every callback queued with them: results
    flush() ────► put(flush) ───┘    released to an imap's queue, flush()es woken

What it owns: the write connection (opened on this thread's behalf by ``Journal``, used by
no other), and ``WriterStats``. The engine thread only puts tuples on a ``SimpleQueue``
(one per Call, not per task): the pickling of results, the Calls' digests (``identity``) and
the SQL all happen here.

Invariant: a callback put after a write runs after the COMMIT that holds that write. That
is how a result is released to the caller only once it is durable: an imap's results are
put on its queue by such callbacks, and a batch is done (``close``) only after a flush.

Durability: WAL with ``synchronous=NORMAL``: a commit survives the process being killed
(SIGKILL, OOM); a power cut may lose the last commits (never corrupt the file), whose tasks
then run again.

A write that fails (a full disk: SQLITE_FULL, or ENOSPC writing a large result's file) sets
``error``, once, and the transaction is rolled back, so what was committed before stays
whole. The writer goes on with later operations (their callbacks must still run), but the
run stops: the journal's sinks see ``error`` and cancel their batch (``session.Journal.stop``),
and ``flush`` raises ``JournalError`` saying why (``describe``), so ``map``/``run`` raise it.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .._errors import JournalError
from .store import describe, disk_full, dumps, place_value

log = logging.getLogger("corral")

MAX_OPS = 20_000
"""Most operations in one transaction: bounds a commit's latency under a flood of Calls."""

COMMIT_INTERVAL = 0.005
"""Seconds the writer may gather operations after a commit before the next one, unless an
operation is urgent (``_URGENT``: someone waits for it). At most ~200 commits a second
whatever the rate of Calls; it adds at most this much to the window in which a finished
task is not yet journaled."""

_URGENT = frozenset(("call", "stop"))


class Batchlike(Protocol):
    number: int

    def identity_of(self, positions: Any) -> tuple[bytes, bytes]: ...

    def keys_of(self, positions: Any) -> list[Any] | None: ...

    def forget(self, positions: Any) -> None: ...


@dataclass
class WriterStats:
    """What the writer did, for tests and benchmarks: transactions, rows, and the longest
    time a finished task waited for its commit (the window in which a coordinator's death
    makes it run again)."""

    commits: int = 0
    rows: int = 0
    tasks: int = 0
    max_window: float = 0.0


class Writer:
    def __init__(self, conn: sqlite3.Connection, path: Path, run: int) -> None:
        self._conn = conn
        self._path = path
        self.run = run
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.put = self._queue.put  # engine thread: the only thing it calls
        self.error: BaseException | None = None
        self.stats = WriterStats()
        self._thread = threading.Thread(
            target=self._loop, name="corral journal writer", daemon=True
        )
        self._thread.start()

    def flush(self) -> None:
        """Wait until everything put so far is committed; raise if a commit failed."""
        done = threading.Event()
        self.put(("call", done.set))
        done.wait()
        if self.error is not None:
            raise self.journal_error()

    def journal_error(self) -> JournalError:
        """What the caller gets for ``error`` (set): a JournalError saying why, caused by it."""
        assert self.error is not None
        error = JournalError(describe(self._path, self.error))
        error.__cause__ = self.error
        return error

    def close(self) -> None:
        self.put(("stop",))
        self._thread.join()

    # -- writer thread ----------------------------------------------------------------------
    def _loop(self) -> None:
        get, get_nowait = self._queue.get, self._queue.get_nowait
        last = 0.0
        while True:
            ops = [get()]
            # Gather for up to COMMIT_INTERVAL after the last commit, unless someone waits
            # (a flush, a result to pass on, the end): fewer, larger transactions.
            deadline = last + COMMIT_INTERVAL
            while len(ops) < MAX_OPS:
                if ops[-1][0] in _URGENT:
                    break
                wait = deadline - time.monotonic()
                try:
                    ops.append(get(timeout=wait) if wait > 0 else get_nowait())
                except queue.Empty:
                    break
            while len(ops) < MAX_OPS:  # and whatever is queued already
                try:
                    ops.append(get_nowait())
                except queue.Empty:
                    break
            stop = self._apply(ops)
            last = time.monotonic()
            if stop:
                return

    def _apply(self, ops: list[tuple[Any, ...]]) -> bool:
        started: list[tuple[Any, ...]] = []
        finished: list[tuple[Any, ...]] = []
        marks: list[tuple[Any, ...]] = []
        batches: list[tuple[Any, ...]] = []
        callbacks: list[Callable[[], None]] = []
        waited: list[float] = []
        stop = False
        run = self.run
        for op in ops:
            kind = op[0]
            try:
                if kind == "start":
                    _, jbatch, positions, worker, pid, attempts, when = op
                    keys = jbatch.keys_of(positions)
                    started.append((run, jbatch.number,
                                    dumps(positions if keys is None else keys), worker, pid,
                                    dumps(attempts) if attempts else None, when))  # fmt: skip
                elif kind == "ok":
                    finished.append(self._ok_row(op))
                    waited.append(op[-1])
                elif kind == "fail":
                    finished.append(self._fail_row(op))
                    waited.append(op[-1])
                elif kind == "mark":
                    marks.append((run, *op[1:]))
                elif kind == "batch":
                    batches.append(op[1:])
                elif kind == "call":
                    callbacks.append(op[1])
                elif kind == "stop":
                    stop = True
            except Exception as exc:
                log.exception("corral: journal %s: could not record %s", self._path, kind)
                self._failed(exc)
        if started or finished or marks or batches:
            self._commit(started, finished, marks, batches)
        now = time.time()
        stats = self.stats
        for t in waited:
            stats.max_window = max(stats.max_window, now - t)
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("corral: journal %s: a release callback raised", self._path)
        return stop

    def _commit(self, started: list[Any], finished: list[Any], marks: list[Any],
                batches: list[Any]) -> None:  # fmt: skip
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            if batches:
                conn.executemany(
                    "INSERT OR IGNORE INTO batches(batch, kind, fn, first_run) VALUES (?,?,?,?)",
                    batches,
                )
            if started:
                conn.executemany(
                    "INSERT INTO started(run, batch, positions, worker, pid, attempts, time) "
                    "VALUES (?,?,?,?,?,?,?)",
                    started,
                )
            if finished:
                conn.executemany(
                    "INSERT INTO finished(run, batch, status, n, positions, keys, digests, value,"
                    " value_file, worker, pid, attempts, started, ended, cpu, max_rss,"
                    " error_type, error_message, traceback, error, history, effects, detail)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    finished,
                )
            if marks:
                conn.executemany(
                    "INSERT INTO marks(run, batch, position, key, status, time, detail) "
                    "VALUES (?,?,?,?,?,?,?)",
                    marks,
                )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            log.error("corral: journal %s: a commit failed: %s", self._path, exc)
            self._failed(exc)
            if conn.in_transaction:  # (SQLite may have rolled it back already)
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:  # the commit's error is the one reported
                    log.exception("corral: journal %s: the rollback failed", self._path)
            return
        stats = self.stats
        stats.commits += 1
        stats.rows += len(started) + len(finished) + len(marks)

    def _failed(self, exc: BaseException) -> None:
        if self.error is None:  # the first failure is the cause; later ones follow from it
            self.error = exc

    def _ok_row(self, op: tuple[Any, ...]) -> tuple[Any, ...]:
        """One successful Call (or the successful part of one): its values in one pickle."""
        _, jbatch, positions, values, record, effects, _t = op
        result = record.result
        n = len(positions)
        self.stats.tasks += n
        error_message = None
        try:
            blob, name = place_value(self._path, dumps(values))
        except Exception as exc:
            blob = name = None
            error_message = f"result not journaled: {type(exc).__name__}: {exc}"
            log.warning("corral: journal %s: %s; these tasks will run again", self._path,
                        error_message)  # fmt: skip
            if disk_full(exc):  # the next commit would fail too: the run stops now
                self._failed(exc)
        started_at, ended_at = result.started, result.ended  # items' times: interpolated
        digest, detail = jbatch.identity_of(positions)
        row = (
            self.run, jbatch.number, "ok", n, dumps(positions),
            _maybe(jbatch.keys_of(positions)), digest, blob, name,
            record.worker, record.pid, _maybe(record.attempts), started_at, ended_at,
            result.cpu, result.max_rss, None, error_message, None, None, None,
            _maybe(effects), detail,
        )  # fmt: skip
        jbatch.forget(positions)
        return row

    def _fail_row(self, op: tuple[Any, ...]) -> tuple[Any, ...]:
        _, jbatch, pos, outcome, _t = op
        self.stats.tasks += 1
        error = outcome.error
        try:
            error_blob = dumps(error) if error is not None else None
        except Exception:
            error_blob = None
        keys = jbatch.keys_of([pos])
        digest, detail = jbatch.identity_of([pos])
        effects = getattr(outcome, "effects", None)  # recorded effects, when corral has them
        row = (
            self.run, jbatch.number, outcome.status.value, 1, dumps([pos]), _maybe(keys),
            digest, None, None, outcome.worker, outcome.pid,
            dumps({pos: outcome.attempts}), outcome.started, outcome.finished,
            outcome.cpu_seconds, outcome.max_rss,
            None if error is None else f"{type(error).__module__}.{type(error).__qualname__}",
            None if error is None else str(error), outcome.traceback, error_blob,
            _maybe(tuple(outcome.history)), _maybe(effects or None), detail,
        )  # fmt: skip
        jbatch.forget([pos])
        return row


def _maybe(value: Any) -> bytes | None:
    return None if value is None else dumps(value)
