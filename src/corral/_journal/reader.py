"""``corral.open_journal(path)``: what a journal holds, read in one consistent snapshot.

For status displays and notebooks, while a run writes the journal or after it ended. The
snapshot is one SQLite read transaction (the journal is in WAL mode, so the writer goes on
meanwhile): what it shows was all committed together, never half a transaction. Nothing is
written, and the writers' lock is not taken.

Security: a journal holds pickles, and reading ``outcomes``/``failures`` unpickles them. A
journal is code: never open one from a source you do not trust.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._errors import JournalError
from .._outcome import Outcome, Status
from .._public import public
from . import store
from .resume import _failed_outcome, _ok_outcome


@dataclass(frozen=True)
class JournaledRun:
    """One process that wrote the journal: its run number, pid, host, start and end (None:
    it did not close the journal: killed, or still running)."""

    run: int
    pid: int
    host: str
    started: float
    ended: float | None


@public
class JournalView:
    """A snapshot of a journal (``corral.open_journal``).

    Attributes:
        path: the journal file.
        runs: the processes that wrote it (``JournaledRun``), oldest first.
        calls: the journaled calls, ``(call number, kind, function)``.
        counts: ``{status: tasks}`` over every journaled call, each task counted once, by
            its latest record (``ok``, ``failed``, ``timeout``, ``crashed``, ``skipped``),
            plus ``interrupted`` for tasks started and never finished.
        interrupted: ``(call, key)`` of tasks marked interrupted by a resumed run.
        unfinished: ``(call, key)`` of tasks started and not finished (yet: running now, or
            stopped with their run), in the order they were started.
        meta: the journal's ``meta`` table (format, version, ..., and ``command``: what
            ``corral run --journal`` ran, as JSON, for ``corral retry``).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        conn = store.connect(path, readonly=True)
        try:
            with store.snapshot(conn):
                self.runs = [JournaledRun(*r) for r in conn.execute(
                    "SELECT run, pid, host, started, ended FROM runs ORDER BY run")]  # fmt: skip
                self.calls = conn.execute(
                    "SELECT batch, kind, fn FROM batches ORDER BY batch"
                ).fetchall()
                self._rows = store.finished_rows(conn)
                starts = conn.execute("SELECT batch, positions FROM started").fetchall()
                marks = conn.execute(
                    "SELECT batch, key FROM marks WHERE status = 'interrupted'"
                ).fetchall()
                self.meta: dict[str, str] = dict(conn.execute("SELECT name, value FROM meta"))
        except Exception as exc:
            if isinstance(exc, JournalError):
                raise
            raise JournalError(f"journal {path}: cannot be read: {exc}") from exc
        finally:
            conn.close()
        self._latest: dict[tuple[int, Any], tuple[int, int]] = {}
        self._place: dict[tuple[int, Any], int] = {}  # a task's input position in its call
        streams = {batch for batch, kind, _ in self.calls if kind == "map"}
        for index, r in enumerate(self._rows):
            positions = store.loads(r[5], path, "a row's positions")
            keys = store.loads(r[6], path, "a row's keys") if r[6] is not None else positions
            # a map's keys are its positions (an imap's: its input positions); a run's
            # positions are its tasks' places
            places = keys if r[2] in streams else positions
            for offset, key in enumerate(keys):
                self._latest[(r[2], key)] = (index, offset)
                self._place[(r[2], key)] = places[offset]
        counts: Counter[str] = Counter()
        for index, _ in self._latest.values():
            counts[self._rows[index][3]] += 1
        running: dict[tuple[int, Any], None] = {}  # (a set in start order)
        for batch, blob in starts:
            for key in store.loads(blob, path, "a start record"):
                if (batch, key) not in self._latest:
                    running[(batch, key)] = None
        counts["interrupted"] = len(running)
        self.unfinished: list[tuple[int, Any]] = list(running)
        self.counts: dict[str, int] = dict(counts)
        self.interrupted = [(b, store.loads(k, path, "a key")) for b, k in marks]
        self._values: dict[int, list[Any]] = {}

    @property
    def outcomes(self) -> list[Outcome]:
        """Every journaled task's latest outcome (values and errors unpickled), by call and
        then in task order (input position)."""
        place = self._place
        ordered = sorted(self._latest.items(), key=lambda kv: (kv[0][0], place[kv[0]]))
        return [self._outcome(key, index, offset) for (_, key), (index, offset) in ordered]

    @property
    def failures(self) -> list[Outcome]:
        """The outcomes of the journaled tasks that did not succeed."""
        return [
            self._outcome(key, index, offset)
            for (_, key), (index, offset) in self._latest.items()
            if self._rows[index][3] != "ok"
        ]

    def _outcome(self, key: Any, index: int, offset: int) -> Outcome:
        r = self._rows[index]
        if r[3] != "ok":
            return _failed_outcome(key, r, self.path)
        values = self._values.get(index)
        if values is None:
            if r[8] is None and r[9] is None:
                return Outcome(key=key, status=Status.OK)
            values = self._values[index] = store.read_value(
                self.path, r[8], r[9], f"the results of row {r[0]}"
            )
        return _ok_outcome(key, r, offset, values, self.path, Status.OK)

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items()) if v)
        return f"<corral journal {self.path}: {counts or 'empty'}; {len(self.runs)} run(s)>"


@public
def open_journal(path: str | os.PathLike[str]) -> JournalView:
    """Read a journal written by ``journal=``: a consistent snapshot of it, even while a run
    writes it. A journal holds pickles: only open one you trust (see docs/journal.md)."""
    journal = Path(os.fspath(path)).absolute()
    store.check(journal, create=False)
    return JournalView(journal)
