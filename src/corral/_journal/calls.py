"""The journal's part in one Pool call (``map``, ``run``, ``imap``), in one object, so that
``_pool`` makes one call per verb and the order of the steps lives here:

    Pool._map / _run_tasks                 Pool.imap
    ──────────────────────                 ─────────
    jc = for_map / for_tasks (resume)      for_stream(...) → (batch, to_run, merge)
    batch(..., jc.sink(sink), jc.given(g))   (the journaled items held back; their
    jc.bind(batch)                            effects handed to the replay: ``on_given``)
    run the batch; jc.check()
    jc.report(report)  (Report.journal)

Without ``journal=`` every step is a no-op (``NO_JOURNAL``): the verbs read the same.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._outcome import Outcome

if TYPE_CHECKING:
    from .._effects import Replay
    from .._report.report import Report
    from .session import Journal, JournalBatch


class JournalCall:
    """One journaled ``map`` or ``run`` (``journal`` None: nothing journaled)."""

    def __init__(self, journal: Journal | None, jb: JournalBatch | None) -> None:
        self.journal = journal
        self.jb = jb

    def given(self, given: Mapping[int, Outcome] | None) -> Mapping[int, Outcome] | None:
        """The positions final already: the journaled outcomes (they end ``cached``)."""
        if self.jb is None:
            return given
        return {**self.jb.resumed.given, **(given or {})}

    def sink(self, sink: Any) -> Any:
        """The batch's sink, journaling what finishes before passing it on."""
        return sink if self.jb is None else self.jb.sink(sink, False)

    def bind(self, batch: Any) -> None:
        if self.jb is not None:
            assert self.journal is not None
            self.journal.bind(self.jb, batch)

    def check(self) -> None:
        """Raise JournalError if a write failed."""
        if self.journal is not None:
            self.journal.check()

    def report(self, report: Report) -> Report:
        """``report`` with what the journal did (``Report.journal``)."""
        if self.jb is None:
            return report
        return dataclasses.replace(report, journal=self.jb.summary())


NO_JOURNAL = JournalCall(None, None)


def for_map(journal: Journal | None, fn: Callable[..., Any], items: Sequence[Any]) -> JournalCall:
    return NO_JOURNAL if journal is None else JournalCall(journal, journal.for_map(fn, items))


def for_tasks(journal: Journal | None, tasks: Sequence[Any]) -> JournalCall:
    return NO_JOURNAL if journal is None else JournalCall(journal, journal.for_tasks(tasks))


def for_stream(
    journal: Journal | None,
    fn: Callable[..., Any],
    source: Iterator[Any],
    ordered: bool,
    present: Callable[[Outcome], Any],
    sink: Any,
    replay: Replay | None,
    make_batch: Callable[[Any], Any],
) -> tuple[Any, Iterator[Any], Callable[[Iterator[Any]], Iterator[Any]]]:
    """An imap's ``(batch, to_run, merge)``: without a journal, the batch of ``sink``, the
    source, and no merge. Journaled (``session.Journal.for_stream``): the journaled items
    are held back and ``merge`` puts them back in place; the results reach the stream once
    committed (a gated sink); a journaled item's effects go to ``replay`` in its place
    among the others' (``Replay.hold``)."""
    if journal is None:
        return make_batch(sink), source, _unchanged
    on_given = replay.hold if replay is not None else None
    jb, to_run, merge = journal.for_stream(fn, source, ordered, present, on_given)
    batch = make_batch(jb.sink(sink, True))
    journal.bind(jb, batch)
    return batch, to_run, merge


def _unchanged(results: Iterator[Any]) -> Iterator[Any]:
    return results
