"""The journal: every task of a run recorded in an SQLite file, so a later run resumes.

    _journal/identity.py  a task's key and the digest of its call (function, arguments)
    _journal/store.py     the file: schema, version and integrity checks, the writers' lock
    _journal/writer.py    the writer thread: batched transactions, off the engine's hot path
    _journal/resume.py    what the journal holds for a batch, matched against the batch now
    _journal/session.py   a Pool's journal: identity and resume per call, the journaling sink
    _journal/reader.py    ``corral.open_journal``: a consistent snapshot for status displays

Hooks into the engine: the batch's sink (wrapped: ``session.JournalSink``), positions given
up front (``Batch(given=)``, which end ``cached``), one ``CallStarted`` event per Call
(``_events.subscribe_calls``), and ``engine.cancel`` of a batch, posted on the engine's inbox
when the journal cannot be written (a full disk: ``session.Journal.stop``). See
docs/journal.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._options import PoolOptions
    from .session import Journal


def open_journal_for(options: PoolOptions) -> Journal | None:
    """The Pool's journal, open for writing (locked), or None without ``journal=``."""
    if options.journal is None:
        return None
    from .session import Journal

    return Journal(
        options.journal, options.journal_code, options.journal_inputs, options.rerun_failed
    )
