"""The journal's store under random kill points (Hypothesis), driven directly.

A "run" journals the tasks not yet journaled, in Calls of random sizes, through the real
``Journal``, ``JournalSink`` (gated: a task counts as reported only when the sink passes it
on, after its commit) and writer thread. The run dies after a random number of commits,
sometimes in the middle of a transaction (its inserts made, no COMMIT), and stops writing
there; the next run resumes from the file. Whatever the kill points: a task reported done is
never lost, no task has two journaled successes, and resumed values are the journaled ones.
"""

from __future__ import annotations

import tempfile
import types
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from corral._journal.session import Journal


def square(x):
    return x * x


class Reported:
    """The inner sink: what corral would have told the caller."""

    def __init__(self) -> None:
        self.done: set[int] = set()

    def ok(self, positions, values, record):
        assert [square(p) for p in positions] == values
        self.done.update(positions)

    def close(self):
        pass


def record(n):
    result = types.SimpleNamespace(started=1.0, ended=2.0, cpu=0.1, max_rss=1, values=[0] * n)
    return types.SimpleNamespace(result=result, worker=0, pid=1, attempts=None, offsets=None)


def one_run(path: Path, n: int, chunks: list[int], kill_at: int | None, mid: bool) -> set[int]:
    """Journal what is left of ``range(n)``; die after ``kill_at`` commits. The positions
    reported done, and the positions given (cached) by resume."""
    journal = Journal(path, "name", "digest", True)
    writer = journal.writer
    real_apply = writer._apply
    dead = False

    def apply(ops):
        """The writer's step, until the kill point; after it, nothing (the process is gone:
        no commit, no result passed on)."""
        nonlocal dead
        if not dead and kill_at is not None and writer.stats.commits >= kill_at:
            dead = True
            if mid:  # inside a transaction: inserts made, never committed
                writer._conn.execute("BEGIN IMMEDIATE")
                writer._conn.execute("INSERT INTO runs(pid) VALUES (-1)")
        if dead:
            return any(op[0] == "stop" for op in ops)
        return real_apply(ops)

    writer._apply = apply
    jb = journal.for_map(square, list(range(n)))
    given = dict(jb.resumed.given)
    assert all(o.value == square(p) for p, o in given.items())
    inner = Reported()
    sink = jb.sink(inner, gated=True)
    left = [p for p in range(n) if p not in given]
    i = 0
    for size in chunks or [1]:
        part = left[i : i + size]
        if not part:
            break
        sink.ok(part, [square(p) for p in part], record(len(part)))
        i += size
        if i >= len(left):
            break
    while i < len(left):
        part = left[i : i + 3]
        sink.ok(part, [square(p) for p in part], record(len(part)))
        i += 3
    writer.put(("stop",))
    writer._thread.join(30)
    assert not writer._thread.is_alive()
    # the process is gone: its connection closes (an open transaction rolls back), its lock too
    writer._conn.close()
    journal._lock.release()
    journal.closed = True
    return inner.done | set(given)


def ok_rows(path: Path) -> dict[int, int]:
    import pickle
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        counts: dict[int, int] = {}
        for (blob,) in conn.execute("SELECT positions FROM finished WHERE status = 'ok'"):
            for p in pickle.loads(blob):
                counts[p] = counts.get(p, 0) + 1
        return counts
    finally:
        conn.close()


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 40),
    runs=st.lists(
        st.tuples(
            st.lists(st.integers(1, 7), max_size=8),
            st.one_of(st.none(), st.integers(0, 4)),
            st.booleans(),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_random_kill_points_never_lose_or_duplicate_a_finished_task(n, runs):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "run.corral"
        reported: set[int] = set()
        for chunks, kill_at, mid in [*runs, ([], None, False)]:  # the last run is not killed
            reported |= one_run(path, n, chunks, kill_at, mid)
            counts = ok_rows(path)
            assert reported <= set(counts), "a task reported done is not journaled"
            assert all(c == 1 for c in counts.values()), "a task was journaled twice"
        assert reported == set(range(n)) == set(ok_rows(path))
