"""Resume: what a journal already holds for one batch, matched against the batch run now.

For each key the latest ``finished`` row decides (rows are in commit order):

    journaled ok,      same digest  ─► given: ``cached``, its value as journaled
    journaled failure, same digest  ─► rerun_failed: runs again; else given: ``cached`` failure
    digest differs                  ─► runs again; ``changed`` names the key and what changed
    started in an earlier run,
      never finished                ─► runs again; marked ``interrupted`` in the journal
    not journaled                   ─► runs

A batch for which the journal holds results of which *none* has the same digest (another
function, other inputs) is not this batch: ``JournalError``, before any work starts, rather
than a silent rerun of everything over the old results.

Reads happen on the caller's thread, through a read-only snapshot, before the batch is
accepted; nothing here writes (the marks go through the writer).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .._errors import JournalError, RemoteError
from .._outcome import Attempt, Outcome, Status
from . import identity
from .store import finished_rows, loads, read_value, snapshot


@dataclass
class Resumed:
    """What resuming one batch found. ``given``: position → the journaled outcome;
    ``changed``: (key, what changed) of the journaled tasks that run again because of it;
    ``interrupted``: keys that were running when an earlier run stopped; ``rerun``: keys of
    journaled failures that run again (``rerun_failed``)."""

    given: dict[int, Outcome] = field(default_factory=dict)
    changed: list[tuple[Any, str]] = field(default_factory=list)
    interrupted: list[Any] = field(default_factory=list)
    rerun: list[Any] = field(default_factory=list)


class Journaled:
    """The journal's rows for one batch, read in one snapshot: the latest row of each key."""

    def __init__(self, conn: sqlite3.Connection, path: Path, number: int, kind: str,
                 run: int) -> None:  # fmt: skip
        self.path = path
        self.number = number
        with snapshot(conn):
            row = conn.execute("SELECT kind, fn FROM batches WHERE batch = ?", (number,)).fetchone()
            if row is not None and row[0] != kind:
                raise JournalError(
                    f"journal {path}: call #{number} of the journaled run was a {row[0]} "
                    f"({row[1]}), this one is a {kind}: it is a journal of another program or "
                    "batch. Use another journal file"
                )
            self.rows = finished_rows(conn, number)
            starts = conn.execute(
                "SELECT positions, run FROM started WHERE batch = ? AND run < ? ORDER BY id",
                (number, run),
            ).fetchall()
            marked = {
                (r[0], r[1])
                for r in conn.execute(
                    "SELECT key, detail FROM marks WHERE batch = ? AND status = 'interrupted'",
                    (number,),
                )
            }
        self.row_keys: list[Sequence[Any]] = []
        self.keys: set[Any] = set()  # every journaled key (C-level unions: ranges, mostly)
        total = 0
        for r in self.rows:
            keys = loads(r[6] if r[6] is not None else r[5], path, "a row's keys")
            self.row_keys.append(keys)
            total += len(keys)
            self.keys.update(keys)
        self.unique = total == len(self.keys)  # no key journaled twice: rows are the state
        self._latest: dict[Any, tuple[int, int]] | None = None
        # started in an earlier run, never finished: interrupted (marked once per start)
        self.interrupted: list[tuple[Any, str]] = []
        for blob, start_run in starts:
            for key in loads(blob, path, "a start record"):
                detail = f"started in run {start_run}"
                if key in self.keys or (_blob(key), detail) in marked:
                    continue
                marked.add((_blob(key), detail))
                self.interrupted.append((key, detail))
        self._values: dict[int, list[Any]] = {}
        self._details: dict[int, identity.Detail] = {}
        self.matched = 0
        self.related = 0  # changed, but only in the function or only in the arguments
        self.ignore_fn = False  # journal_code="ignore": only the arguments' halves compared

    @property
    def latest(self) -> dict[Any, tuple[int, int]]:
        """Each key's latest row and offset in it (built when first asked: a resume whose
        Calls all match never needs it)."""
        if self._latest is None:
            latest: dict[Any, tuple[int, int]] = {}
            for index, keys in enumerate(self.row_keys):
                for offset, key in enumerate(keys):
                    latest[key] = (index, offset)
            self._latest = latest
        return self._latest

    def detail(self, index: int) -> identity.Detail:
        detail = self._details.get(index)
        if detail is None:
            r = self.rows[index]
            try:
                detail = self._details[index] = identity.Detail(r[23])
            except Exception as exc:
                raise JournalError(
                    f"journal {self.path}: the identity of row {r[0]} cannot be read ({exc})"
                ) from exc
        return detail

    def match(self, key: Any, fn_hash: bytes, call: Any, rerun_failed: bool,
              out: Resumed) -> Outcome | None:  # fmt: skip
        """The outcome to give for ``key`` (None: it runs), noting in ``out`` why not."""
        found = self.latest.get(key)
        if found is None:
            return None
        index, offset = found
        what = self.detail(index).changed(offset, fn_hash, call, self.ignore_fn)
        if what:
            out.changed.append((key, what))
            if what != identity.BOTH:
                self.related += 1
            return None
        return self.take(key, index, offset, rerun_failed, out)

    def take(self, key: Any, index: int, offset: int, rerun_failed: bool,
             out: Resumed) -> Outcome | None:  # fmt: skip
        """The journaled outcome of an unchanged task (None: it runs again)."""
        self.matched += 1
        r = self.rows[index]
        if r[3] != "ok":
            if rerun_failed:
                out.rerun.append(key)
                return None
            return _failed_outcome(key, r, self.path)  # (its status shows how it failed)
        if r[8] is None and r[9] is None:
            return None  # its result could not be journaled: it runs again
        values = self._values.get(index)
        if values is None:
            values = self._values[index] = read_value(
                self.path, r[8], r[9], f"the results of row {r[0]}"
            )
        return _ok_outcome(key, r, offset, values, self.path, Status.CACHED)

    def check_same_batch(self, out: Resumed) -> None:
        """Raise when the journal holds results for this call and none of them has the same
        function or the same arguments: a journal of another batch. (All functions changed,
        or all arguments: everything runs again, and the report says so.)"""
        if self.rows and not self.matched and not self.related and out.changed:
            key, what = out.changed[0]
            raise JournalError(
                f"journal {self.path}: call #{self.number} does not match what the journal "
                f"holds for it: none of its {len(self.keys)} journaled tasks has the same "
                f"function or the same arguments (task {key!r}: the {what} changed). It looks "
                "like a journal of another batch; use another journal file, or delete this "
                "one to start over"
            )


class Now(Protocol):
    """The batch about to run, as resume asks about it (``session.JournalBatch``)."""

    inputs: str

    @property
    def keys_are_positions(self) -> int:
        """A map's length (its keys are its positions), else 0."""
        ...

    def position(self, key: Any) -> int | None: ...

    def fn_part(self, positions: Sequence[int]) -> bytes: ...

    def calls_of(self, positions: Sequence[int]) -> list[Any]: ...


def resume(journaled: Journaled, now: Now, rerun_failed: bool) -> Resumed:
    """Match a whole batch against the journal, a journaled Call at a time: when the digest
    of the Call's keys' new calls equals the journaled one (the usual case: one pickle and
    one hash per Call), all its tasks are unchanged; otherwise each task is compared."""
    out = Resumed()
    given = out.given
    by_position = now.keys_are_positions
    for index, r in enumerate(journaled.rows):
        keys = journaled.row_keys[index]
        if by_position and isinstance(keys, range) and keys.start >= 0 and keys.stop <= by_position:
            positions: Sequence[int | None] = keys  # a map's Call: its keys are positions
        else:
            positions = [now.position(k) for k in keys]
        whole = None not in positions and (
            journaled.unique or all(journaled.latest[k][0] == index for k in keys)
        )
        if whole:
            digest = identity.digest_of(
                now.fn_part(positions),  # type: ignore[arg-type]
                now.calls_of(positions),  # type: ignore[arg-type]
                now.inputs,
            )
            if digest == r[7]:
                if r[3] == "ok" and r[12] is None and (r[8] is not None or r[9] is not None):
                    _take_row(journaled, index, keys, positions, given)  # type: ignore[arg-type]
                    continue
                for offset, (key, pos) in enumerate(zip(keys, positions, strict=True)):
                    outcome = journaled.take(key, index, offset, rerun_failed, out)
                    if outcome is not None:
                        given[pos] = outcome  # type: ignore[index]
                continue
        latest = journaled.latest
        for offset, (key, pos) in enumerate(zip(keys, positions, strict=True)):
            if pos is None or latest[key] != (index, offset):
                continue  # not in this batch, or journaled again later
            p = [pos]
            outcome = journaled.match(key, now.fn_part(p), now.calls_of(p)[0], rerun_failed, out)
            if outcome is not None:
                given[pos] = outcome
    journaled.check_same_batch(out)
    out.interrupted = [key for key, _ in journaled.interrupted]
    return out


def _take_row(
    journaled: Journaled,
    index: int,
    keys: Sequence[Any],
    positions: Sequence[int],
    given: dict[int, Outcome],
) -> None:
    """Every task of a successful Call (none retried) unchanged: their outcomes, in one
    loop with what is the same for all of them computed once (``_ok_outcome`` inline; a
    resume of a million tasks is mostly this loop)."""
    r = journaled.rows[index]
    values = read_value(journaled.path, r[8], r[9], f"the results of row {r[0]}")
    journaled.matched += len(keys)
    n, started, ended, worker, pid, rss = r[4], r[13], r[14], r[10], r[11], r[16]
    cpu = r[15] / n if r[15] is not None and n else None
    timed = started is not None and ended is not None and n
    step = (ended - started) / n if timed else 0.0
    cached, ok, new_attempt = Status.CACHED, Status.OK, tuple.__new__
    effects = _row_effects(r, journaled.path)
    for offset, key in enumerate(keys):
        t0 = started + offset * step if timed else None
        t1 = t0 + step if t0 is not None else None
        # every field (tuple.__new__ skips the defaults): queued, exitcode, signal unknown
        attempt = new_attempt(Attempt, (worker, pid, t0, t1, ok, None, None, cpu, rss, None, None))
        given[positions[offset]] = Outcome(
            key, cached, values[offset], None, 1, worker, pid, t0, t1, cpu, rss, None, None,
            (attempt,), effects.get(offset, ()) if effects else (),
        )  # fmt: skip


def _blob(key: Any) -> bytes:
    from .store import dumps

    return dumps(key)


def _ok_outcome(
    key: Any, r: Sequence[Any], offset: int, values: list[Any], path: Path, status: Status
) -> Outcome:
    """A journaled success (``status``: ``cached`` for resume, ``ok`` for the reader); item
    times interpolated over its Call. Built positionally: a resume builds millions."""
    n = r[4]
    started, ended = r[13], r[14]
    t0 = t1 = None
    if started is not None and ended is not None and n:
        step = (ended - started) / n
        t0 = started + offset * step
        t1 = t0 + step
    count = 1
    if r[12] is not None:  # retried tasks in this Call: their attempts, by position
        attempts = loads(r[12], path, "attempts")
        count = attempts.get(loads(r[5], path, "positions")[offset], 1)
    worker, pid = r[10], r[11]
    cpu = r[15] / n if r[15] is not None and n else None
    attempt = tuple.__new__(Attempt, (worker, pid, t0, t1, Status.OK, None, None, cpu, r[16],
                                      None, None))  # fmt: skip
    effects = _row_effects(r, path)
    return Outcome(key, status, values[offset], None, count, worker, pid, t0, t1, cpu, r[16],
                   None, None, (attempt,), effects.get(offset, ()) if effects else ())  # fmt: skip


def _row_effects(r: Sequence[Any], path: Path) -> dict[int, tuple[Any, ...]] | None:
    """A successful row's recorded effects by offset in its positions (``session._effects``);
    None when its tasks recorded none. (Asked once per task of the row: the last rows'
    are kept unpickled.)"""
    blob = r[22]
    if blob is None:
        return None
    effects = _EFFECTS.get(blob)
    if effects is None:
        effects = loads(blob, path, "effects")
        if len(_EFFECTS) >= 16:
            _EFFECTS.clear()
        _EFFECTS[blob] = effects
    return effects if isinstance(effects, dict) else None


_EFFECTS: dict[bytes, Any] = {}
"""The last rows' effects, unpickled (a row's tasks each ask for theirs)."""


def _failed_outcome(
    key: Any, r: Sequence[Any], path: Path, status: Status | None = None
) -> Outcome:
    error_type, message, tb = r[17], r[18], r[19]
    try:
        error = loads(r[20], path, "an error")
    except JournalError:
        error = None
    if error is None and error_type is not None:
        error = RemoteError(error_type, message or "", tb or "")
    history = loads(r[21], path, "a history") if r[21] is not None else ()
    attempts = loads(r[12], path, "attempts") if r[12] is not None else {}
    return Outcome(
        key=key,
        status=status or Status(r[3]),
        error=error,
        attempts=next(iter(attempts.values()), len(history)),
        worker=r[10],
        pid=r[11],
        started=r[13],
        finished=r[14],
        cpu_seconds=r[15],
        max_rss=r[16],
        traceback=tb,
        history=tuple(history),
    )
