"""The journal file: schema, version and integrity checks, the writers' lock, rows in and out.

A journal is one SQLite database (stdlib ``sqlite3``, WAL mode) plus, beside it, a lock file
(``run.corral.lock``) and a folder for large results (``run.corral.d/``)::

    meta      name, value           format = corral-journal, version, corral version, created;
                                    command: what ``corral run``/``exec`` ran (JSON, ``retry``)
    runs      run, pid, host, started, ended          one row per process that wrote
    batches   batch, kind, fn, first_run              the n-th journaled call of a run
    started   run, batch, positions, worker, pid, attempts, time          one row per Call
    finished  run, batch, status, positions, keys, digests, value | value_file,
              worker, pid, attempts, started, ended, cpu, max_rss,
              error_type, error_message, traceback, error, history, effects, detail
                                  one row per successful Call, or per task that did not succeed
    marks     run, batch, position, key, status, time, detail   interrupted / changed

``positions``, ``keys``, ``attempts``, ``value``, ``error``, ``history``, ``effects`` and
``detail`` are pickles (protocol 5); ``digests`` is the 16-byte digest of the row's Call and
``detail`` what tells its tasks apart (``identity``). The latest ``finished`` row of a key
is its state; earlier ones are history.

Ownership: the writer thread (``writer``) alone writes, through one connection, once
``session.Journal`` took the lock; readers (``reader``, and resume on the caller's thread)
read through their own connections, in one transaction each.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pickle
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._errors import JournalError, JournalLocked

FORMAT = "corral-journal"
VERSION = 1
INLINE_LIMIT = 256 * 1024
"""A Call's pickled results up to this size live in the journal; bigger ones in a file of
``<journal>.d/`` (the row names it). The one place that decides is ``place_value``."""

LOCK_WAIT = 10.0
"""How long a new run waits for the lock of a writer that is dead (its workers, forked
while it held the lock, may outlive it by a moment) before saying who holds it."""

SCHEMA = """
CREATE TABLE meta(name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs(run INTEGER PRIMARY KEY, pid INTEGER, host TEXT, started REAL, ended REAL);
CREATE TABLE batches(batch INTEGER PRIMARY KEY, kind TEXT, fn TEXT, first_run INTEGER);
CREATE TABLE started(id INTEGER PRIMARY KEY, run INTEGER, batch INTEGER, positions BLOB,
    worker INTEGER, pid INTEGER, attempts BLOB, time REAL);
CREATE TABLE finished(id INTEGER PRIMARY KEY, run INTEGER, batch INTEGER, status TEXT,
    n INTEGER, positions BLOB, keys BLOB, digests BLOB, value BLOB, value_file TEXT,
    worker INTEGER, pid INTEGER, attempts BLOB, started REAL, ended REAL, cpu REAL,
    max_rss INTEGER, error_type TEXT, error_message TEXT, traceback TEXT, error BLOB,
    history BLOB, effects BLOB, detail BLOB);
CREATE TABLE marks(id INTEGER PRIMARY KEY, run INTEGER, batch INTEGER, position INTEGER,
    key BLOB, status TEXT, time REAL, detail TEXT);
CREATE INDEX finished_batch ON finished(batch, id);
CREATE INDEX started_batch ON started(batch, id);
"""
_SQLITE_HEADER = b"SQLite format 3\x00"


def dumps(value: Any) -> bytes:
    return pickle.dumps(value, 5)


def loads(blob: bytes | None, path: Path, what: str) -> Any:
    if blob is None:
        return None
    try:
        return pickle.loads(blob)
    except Exception as exc:
        raise JournalError(
            f"journal {path}: {what} cannot be read back ({type(exc).__name__}: {exc})"
        ) from exc


def side_folder(path: Path) -> Path:
    return path.with_name(path.name + ".d")


def place_value(path: Path, blob: bytes) -> tuple[bytes | None, str | None]:
    """Where a pickled result goes: inline (``(blob, None)``), or, past ``INLINE_LIMIT``, a
    file in ``<journal>.d/`` written and synced before the row that names it commits
    (``(None, name)``)."""
    if len(blob) <= INLINE_LIMIT:
        return blob, None
    folder = side_folder(path)
    folder.mkdir(exist_ok=True)
    name = f"{uuid.uuid4().hex}.pickle"
    with open(folder / name, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    return None, name


def read_value(path: Path, blob: bytes | None, name: str | None, what: str) -> Any:
    if name is not None:
        try:
            blob = (side_folder(path) / name).read_bytes()
        except OSError as exc:
            raise JournalError(
                f"journal {path}: {what} is in {side_folder(path) / name}, which cannot be "
                f"read ({exc.strerror or exc})"
            ) from exc
    return loads(blob, path, what)


# -- opening --------------------------------------------------------------------------------


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the journal's disk (or quota) is full."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    # SQLITE_FULL (``sqlite_errorname`` exists from Python 3.11; its message on every version)
    return isinstance(exc, sqlite3.Error) and (
        getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL" or "is full" in str(exc)
    )


def describe(path: Path, exc: BaseException, *, running: bool = True) -> str:
    """The message of the JournalError a failed write becomes: the journal, the cause, what
    happened to the run (``running``: it had started; else it was being opened) and what
    to do."""
    cause = f"{type(exc).__name__}: {exc}"
    if disk_full(exc):
        if not running:
            return (
                f"journal {path}: cannot be written: no space left on its disk (ENOSPC; "
                f"{cause}); nothing ran. Free space in {path.parent}, or use another journal"
            )
        return (
            f"journal {path}: cannot be written: no space left on its disk (ENOSPC; {cause}). "
            "The run stopped; what was journaled before is kept. Free space in "
            f"{path.parent}, then run the same program with the same journal: it resumes"
        )
    if not running:
        return f"journal {path}: cannot be written ({cause}); nothing ran"
    return (
        f"journal {path}: writing failed ({cause}); the run stopped, and the tasks that "
        "finished since the last commit are not journaled (they run again on resume)"
    )


@contextlib.contextmanager
def opening(path: Path) -> Iterator[None]:
    """Around the writes that open a journal (create it, record the run or a meta row): a
    failure (a full disk) is a JournalError saying so, not SQLite's own exception."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        raise JournalError(describe(path, exc, running=False)) from exc


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection to a journal that passed ``check``; autocommit (transactions explicit)."""
    if readonly:
        uri = f"file:{path}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


def check(path: Path, *, create: bool) -> None:
    """Raise JournalError naming ``path`` and what is wrong unless it is a whole corral
    journal of this format (or, with ``create``, absent or empty: then it is created)."""
    size = path.stat().st_size if path.exists() else 0
    if size == 0:
        if not create:
            raise JournalError(f"journal {path}: no such journal (missing or empty)")
        _create(path)
        return
    with open(path, "rb") as f:
        header = f.read(100)
    if not header.startswith(_SQLITE_HEADER):
        raise JournalError(
            f"journal {path}: not a corral journal (not an SQLite database; it starts with "
            f"{header[:16]!r}). Name another file, or remove this one if it is yours to remove"
        )
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # The header's page count is the database's size as of the last checkpoint. While a
    # write-ahead log holds frames, the file may lag behind it legitimately: a checkpoint
    # that failed half way (a full disk) has written page 1 but not the pages past the
    # file's end. SQLite reads those pages from the log; quick_check below checks the whole.
    wal = path.with_name(path.name + "-wal")
    logged = wal.exists() and wal.stat().st_size > 0
    if len(header) < 100 or (pages and size < pages * page_size and not logged):
        raise JournalError(
            f"journal {path}: truncated ({size} bytes; its header says {pages * page_size})"
        )
    try:
        conn = connect(path)
        try:
            problems = [r[0] for r in conn.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise JournalError(f"journal {path}: damaged: {'; '.join(problems[:3])}")
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if "meta" not in tables:
                raise JournalError(
                    f"journal {path}: an SQLite database, but not a corral journal (it has "
                    f"no corral meta table; tables: {', '.join(sorted(tables)) or 'none'})"
                )
            meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise JournalError(f"journal {path}: damaged or not a journal: {exc}") from exc
    if meta.get("format") != FORMAT:
        raise JournalError(
            f"journal {path}: an SQLite database, but not a corral journal "
            f"(format {meta.get('format')!r})"
        )
    if meta.get("version") != str(VERSION):
        raise JournalError(
            f"journal {path}: written in journal format v{meta.get('version')} (by corral "
            f"{meta.get('corral')}); this corral reads format v{VERSION}. Finish that run "
            "with the corral that started it, or start a new journal"
        )


def record_meta(path: Path, name: str, value: str) -> None:
    """Set one ``meta`` row (``corral run --journal`` records its command there, for
    ``corral retry``), under the writers' lock, before the run opens the journal: a journal
    another run is writing is refused here (JournalLocked), before any work starts."""
    lock = Lock(path)
    lock.acquire()
    try:
        with opening(path):
            check(path, create=True)
            conn = connect(path)
            try:
                conn.execute(
                    "INSERT OR REPLACE INTO meta(name, value) VALUES (?, ?)", (name, value)
                )
            finally:
                conn.close()
    finally:
        lock.release()


def _create(path: Path) -> None:
    """Make a new journal at ``path`` (absent or empty) in one step: built whole beside it
    and renamed into place, so a coordinator killed while creating it (SIGKILL during the
    start-up) leaves either no journal or a whole one, never an SQLite file without tables
    that the next start would have to refuse."""
    from .. import __version__

    _remove_stale_drafts(path)
    draft = path.with_name(f".{path.name}.{os.getpid()}.new")
    _remove_draft(draft)
    conn = connect(draft)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.executemany(
            "INSERT INTO meta(name, value) VALUES (?, ?)",
            [
                ("format", FORMAT),
                ("version", str(VERSION)),
                ("corral", __version__),
                ("created", repr(time.time())),
            ],
        )
        conn.execute("COMMIT")
        # WAL is recorded in the file's header; the last connection's close checkpoints
        # and removes the draft's log, so the file renamed is the whole journal.
        conn.execute("PRAGMA journal_mode = WAL")
    except BaseException:
        conn.close()
        _remove_draft(draft)
        raise
    conn.close()
    os.replace(draft, path)


def _remove_draft(draft: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{draft}{suffix}")


def _remove_stale_drafts(path: Path) -> None:
    """Drafts (``.<journal>.<pid>.new``) left by a creator that was killed: those of a pid
    that no longer runs (the writers' lock is held here, so no live creator is racing)."""
    prefix = f".{path.name}."
    with contextlib.suppress(OSError):
        for name in os.listdir(path.parent):
            if not (name.startswith(prefix) and name.endswith(".new")):
                continue
            pid = name[len(prefix) : -len(".new")]
            if pid.isdigit() and not _alive(int(pid)):
                _remove_draft(path.parent / name)


# -- the writers' lock ----------------------------------------------------------------------


class Lock:
    """``<journal>.lock``, held (``fcntl.lockf``: per process, not inherited by forked
    workers, released by the kernel when the holder dies) by the one process writing the
    journal; it holds that process's pid, for the message a second writer gets."""

    def __init__(self, path: Path) -> None:
        self.path = path.with_name(path.name + ".lock")
        self.journal = path
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise JournalError(
                f"journal {self.journal}: cannot be written ({exc.strerror or exc}: {self.path})"
            ) from exc
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    os.close(fd)
                    raise
                holder = self._holder(fd)
                if _alive(holder) or time.monotonic() > deadline:
                    os.close(fd)
                    raise JournalLocked(
                        f"journal {self.journal} is being written by another run (pid "
                        f"{holder if holder else 'unknown'}, lock {self.path}): two runs "
                        "cannot write one journal. Wait for it to end, or use another journal"
                    ) from None
                time.sleep(0.05)  # the holder died; its lock goes with its last process
        # who holds it, for the message a second writer gets; on a full disk, not said
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    @staticmethod
    def _holder(fd: int) -> int | None:
        try:
            return int(os.pread(fd, 64, 0).split()[0])
        except (ValueError, IndexError, OSError):
            return None

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing releases the lock
            self._fd = None


def _alive(pid: int | None) -> bool:
    if pid is None:
        return True  # unknown: say so rather than guess
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- reading --------------------------------------------------------------------------------


@contextlib.contextmanager
def snapshot(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One read transaction: every SELECT inside sees the same committed state (WAL)."""
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        conn.execute("COMMIT")


FINISHED_COLUMNS = (
    "id, run, batch, status, n, positions, keys, digests, value, value_file, worker, pid, "
    "attempts, started, ended, cpu, max_rss, error_type, error_message, traceback, error, "
    "history, effects, detail"
)


def finished_rows(conn: sqlite3.Connection, batch: int | None = None) -> list[tuple[Any, ...]]:
    """The ``finished`` rows (of one batch), oldest first; values not yet unpickled."""
    if batch is None:
        sql = f"SELECT {FINISHED_COLUMNS} FROM finished ORDER BY id"
        return conn.execute(sql).fetchall()
    sql = f"SELECT {FINISHED_COLUMNS} FROM finished WHERE batch = ? ORDER BY id"
    return conn.execute(sql, (batch,)).fetchall()


def started_rows(conn: sqlite3.Connection, batch: int, before_run: int) -> list[tuple[bytes, int]]:
    """``(positions, run)`` of the Calls of ``batch`` sent by runs before ``before_run``."""
    return conn.execute(
        "SELECT positions, run FROM started WHERE batch = ? AND run < ? ORDER BY id",
        (batch, before_run),
    ).fetchall()
