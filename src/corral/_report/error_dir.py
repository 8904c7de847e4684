"""``error_dir="errors/"``: one report per failed task, a Markdown file and its JSON twin, and
``index.json`` listing them, written while the batch runs.

    engine thread                          writer thread (one per batch, this module)
    ─────────────                          ─────────────────────────────────────────
    TaskFinished (not ok, not cancelled) ─► subscriber: queue.put((position, outcome, item))
    of this batch, cached ones included      │ (all it does on the engine thread)
                                             ▼
                                           task-<key>.md, task-<key>.json  (write, rename)
                                           index.json: at the start, when the queue runs dry,
                                           and every INDEX_EVERY s under a stream
    batch done (caller's thread): finish ─► drain, last index.json ("complete": true), and
                                           remove the reports of the previous run into this
                                           folder whose task did not fail in this one

Ownership: the writer thread alone writes the folder; the subscriber (engine thread) only
puts on the queue; ``finish`` (the caller's thread) joins the writer before it writes the
last index. Every file is written to a temporary name in the folder and renamed over its
final name (``os.replace``), so a coordinator killed at any moment leaves each report and
the index whole: the old version or the new one, never half of one. ``index.json`` lists
the reports in the folder: during the run, this run's reports written so far (the last
second's may be missing from it) and the previous run's not yet superseded (``"this_run":
false``, ``"complete": false``); at the end, exactly this run's (``"complete": true``).

An earlier run's reports are those its index lists and, when it was killed before its last
index, the ``task-*.json`` files that say they are corral's reports (``"format"``).

Which tasks get a report: every outcome that is not ``ok``, except ``cancelled`` (the run was
stopped; the task did not fail): ``failed``, ``timeout``, ``crashed``, ``skipped``, and a
``cached`` failure (an earlier run's, given on resume). Only files an index of this folder
names are ever removed: other files in the folder are left alone.

Cost: nothing without ``error_dir``. With it, the pool's event stream is active while the
batch runs (a few µs per task; see ``_events``) and each failure costs the engine thread a
``queue.put``; the formatting and the disk are the writer's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import re
import reprlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import ConfigError, RemoteTraceback
from .._events import Events, TaskFinished
from .._outcome import Outcome, Status

if TYPE_CHECKING:
    from .._batch import Batch

log = logging.getLogger("corral")

FORMAT = "corral error reports"
VERSION = 1
INDEX = "index.json"
NAME_CHARS = 60
"""Longest part of a file name taken from a task's key (then a hash, when it was cut)."""
OUTPUT_TAIL = 8000
"""Characters kept of a task's captured output (its end)."""
INDEX_EVERY = 1.0
"""Seconds between rewrites of the index while failures keep coming."""
"""Characters kept of a task's captured output (its end)."""

CallOf = Callable[[int, Any], tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]]
"""The function and arguments of the task at a position (and its item, for ``map``)."""

_ARGS = reprlib.Repr()
_ARGS.maxstring = 120
_ARGS.maxother = 120
_ARGS.maxlist = _ARGS.maxtuple = _ARGS.maxset = _ARGS.maxdict = 8
_ARGS.maxlevel = 3
CALL_CHARS = 1000


class ErrorReports:
    """The report folder of one batch (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike[str], call_of: CallOf) -> None:
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"error_dir {str(folder)!r} cannot be created: {exc}") from None
        if not os.access(self.folder, os.W_OK):
            raise ConfigError(f"error_dir {str(folder)!r} is not writable")
        self._call_of = call_of
        self._started = time.time()
        self._earlier = _earlier_reports(self.folder)  # key repr -> its entry
        self._names = {e["key"]: Path(e["markdown"]).stem for e in self._earlier.values()}
        self._entries: dict[str, dict[str, Any]] = {}  # this run's, by key repr
        self._queue: queue.SimpleQueue[tuple[int, Outcome, Any] | None] = queue.SimpleQueue()
        self._unsubscribe: Callable[[], None] | None = None
        for stale in self.folder.glob(".*.tmp-*"):  # a writer killed between write and rename
            with contextlib.suppress(OSError):
                stale.unlink()
        self._thread = threading.Thread(
            target=self._write_loop, name="corral error reports", daemon=True
        )
        self._thread.start()

    # -- engine thread -----------------------------------------------------------------------
    def subscribe(self, events: Events, batch: Batch) -> None:
        """Take this batch's failures from the event stream (before the batch is accepted,
        so that its cached failures are seen too)."""
        ident, star, put = id(batch), batch.star, self._queue.put

        def on_event(event: Any) -> None:
            if type(event) is not TaskFinished or event.batch != ident:
                return
            outcome = event.outcome
            if outcome is None or outcome.ok or outcome.status is Status.CANCELLED:
                return
            item = None if star else batch.payload([event.position])[0]
            put((event.position, outcome, item))

        events.subscribe(on_event)
        self._unsubscribe = lambda: events.unsubscribe(on_event)

    # -- caller's thread ---------------------------------------------------------------------
    def add(self, position: int, outcome: Outcome, item: Any = None) -> None:
        """Report an outcome that did not come through the event stream: a finished run's,
        read back from its journal (``corral report --errors``)."""
        if not outcome.ok and outcome.status is not Status.CANCELLED:
            self._queue.put((position, outcome, item))

    def finish(self, complete: bool = True) -> None:
        """The batch is over: write what is left, the last index, and remove the reports of
        an earlier run whose task did not fail in this one (not when ``complete`` is False:
        a run stopped by Ctrl-C did not see every task)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._queue.put(None)
        self._thread.join()
        if complete:
            for key, entry in self._earlier.items():
                if key not in self._entries:
                    for name in (entry["markdown"], entry["json"]):
                        with contextlib.suppress(OSError):
                            (self.folder / name).unlink()
            self._earlier = {}
        self._write_index(finished=True, complete=complete)

    # -- writer thread -----------------------------------------------------------------------
    def _write_loop(self) -> None:
        self._index_now()
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                self._write(*job)
                # when the queue runs dry, and at least every INDEX_EVERY s under a stream
                if self._queue.empty() or time.monotonic() - self._indexed > INDEX_EVERY:
                    self._index_now()
            except Exception:
                log.exception("corral: writing the error report of task %r failed", job[1].key)

    def _index_now(self) -> None:
        self._write_index(finished=False, complete=False)
        self._indexed = time.monotonic()

    def _write(self, position: int, outcome: Outcome, item: Any) -> None:
        key = _key_text(outcome.key)
        name = self._name_for(key, outcome.key)
        try:
            call = self._call_of(position, item)
        except Exception:  # the report must be written anyway
            call = None
        doc = describe(outcome, call, position)
        _write_atomic(self.folder / f"{name}.json", json.dumps(doc, indent=2, default=str) + "\n")
        _write_atomic(self.folder / f"{name}.md", markdown(doc))
        self._entries[key] = {
            "key": key,
            "position": position,
            "status": doc["status"],
            "error": doc["error"]["line"],
            "markdown": f"{name}.md",
            "json": f"{name}.json",
        }

    def _name_for(self, key: str, raw: Any) -> str:
        name = self._names.get(key)
        if name is None:
            name = safe_name(raw)
            taken = {n for k, n in self._names.items() if k != key}
            if name in taken:  # another key gives the same name (1 and "1", cut names)
                name = f"{name}-{_digest(key)}"
            self._names[key] = name
        return name

    def _write_index(self, *, finished: bool, complete: bool) -> None:
        reports = sorted(self._entries.values(), key=lambda e: e["position"])
        this_run = [{**e, "this_run": True} for e in reports]
        earlier = [
            {**e, "this_run": False} for k, e in self._earlier.items() if k not in self._entries
        ]
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "run": {
                "pid": os.getpid(),
                "started": _iso(self._started),
                "finished": _iso(time.time()) if finished else None,
                "complete": complete,
            },
            "failed": len(this_run),
            "reports": this_run + earlier,
        }
        _write_atomic(self.folder / INDEX, json.dumps(doc, indent=2, default=str) + "\n")


# -- one report ---------------------------------------------------------------------------------


def describe(
    outcome: Outcome,
    call: tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]] | None,
    position: int,
) -> dict[str, Any]:
    """The JSON report of one task that did not succeed (the Markdown one says the same)."""
    error = outcome.error
    traceback = outcome.traceback
    cause = getattr(error, "__cause__", None)
    if traceback is None and isinstance(cause, RemoteTraceback):
        traceback = cause.tb
    exitcode = getattr(error, "exitcode", None)
    return {
        "format": FORMAT,
        "version": VERSION,
        "key": _key_text(outcome.key),
        "position": position,
        "group": None if outcome.group is None else str(outcome.group),
        "status": outcome.status.value,
        "call": _call_text(call),
        "error": {
            "type": _type_name(error),
            "message": "" if error is None else str(error),
            "line": _error_line(outcome),
            "traceback": traceback,
            "stack": getattr(error, "stack", None),  # a hung task's, when corral took it
        },
        "worker": {
            "id": outcome.worker,
            "pid": outcome.pid,
            "exitcode": exitcode,
            "signal": getattr(error, "signal", None),
            "during": getattr(error, "during", None),
            "timeout": getattr(error, "timeout", None),
        },
        "attempts": [
            {
                "attempt": i,
                "worker": a.worker,
                "pid": a.pid,
                "started": _iso(a.started),
                "finished": _iso(a.finished),
                "status": str(a.status),
                "error": a.error,
            }
            for i, a in enumerate(outcome.history, 1)
        ],
        "output": {
            "stdout": _tail(getattr(outcome, "stdout", None)),
            "stderr": _tail(getattr(outcome, "stderr", None)),
        },
        "timings": {
            "started": _iso(outcome.started),
            "finished": _iso(outcome.finished),
            "seconds": outcome.duration,
            "cpu_seconds": outcome.cpu_seconds,
            "max_rss": outcome.max_rss,
        },
    }


def markdown(doc: dict[str, Any]) -> str:
    """The human-readable twin of ``describe``'s document."""
    error, worker, timings = doc["error"], doc["worker"], doc["timings"]
    lines = [f"# Task {doc['key']}: {doc['status']}", "", f"**{error['line']}**", ""]
    where = "in-process" if worker["id"] == -1 else f"worker {worker['id']}"
    facts = [
        ("call", f"`{doc['call']}`" if doc["call"] else "(not known)"),
        ("position", doc["position"]),
        ("group", doc["group"]),
        ("ran on", f"{where}, pid {worker['pid']}" if worker["id"] is not None else "never ran"),
        ("exit", _exit_text(worker)),
        ("attempts", len(doc["attempts"])),
        ("started", timings["started"]),
        ("finished", timings["finished"]),
        ("seconds", None if timings["seconds"] is None else f"{timings['seconds']:.3f}"),
    ]
    lines += [f"- {name}: {value}" for name, value in facts if value is not None]
    sections = [
        ("Traceback (in the worker)", error["traceback"]),
        ("Stack of the hung task", error["stack"]),
        ("Captured stdout (end)", doc["output"]["stdout"]),
        ("Captured stderr (end)", doc["output"]["stderr"]),
    ]
    for title, text in sections:
        if text:
            lines += ["", f"## {title}", "", "```text", text.rstrip("\n"), "```"]
    if doc["attempts"]:
        lines += [
            "",
            "## Attempts",
            "",
            "| # | worker | pid | started | finished | status | error |",
        ]
        lines.append("|---|---|---|---|---|---|---|")
        for a in doc["attempts"]:
            cells = [a["attempt"], a["worker"], a["pid"], a["started"], a["finished"]]
            cells += [a["status"], (a["error"] or "").replace("|", "\\|")]
            lines.append("| " + " | ".join("" if c is None else str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


# -- helpers ------------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(key: Any) -> str:
    """A file name (without suffix) for a task's key: ``task-`` and the key's text with
    anything but letters, digits, ``.``, ``_`` and ``-`` made ``_``; cut to ``NAME_CHARS``,
    with a hash of the whole key when anything was changed or cut, so that two keys that
    differ only there get two names."""
    text = key if isinstance(key, str) else _key_text(key)
    safe = _UNSAFE.sub("_", text).strip("._") or "key"
    if safe != text or len(safe) > NAME_CHARS:
        return f"task-{safe[:NAME_CHARS]}-{_digest(_key_text(key))}"
    return f"task-{safe}"


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "backslashreplace")).hexdigest()[:8]


def _key_text(key: Any) -> str:
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key)
    try:
        return repr(key)
    except Exception:
        return f"<{type(key).__name__} key>"


def _call_text(call: tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]] | None) -> str:
    if call is None:
        return ""
    fn, args, kwargs = call
    name = f"{getattr(fn, '__module__', None) or '?'}.{getattr(fn, '__qualname__', repr(fn))}"
    parts = [_ARGS.repr(a) for a in args] + [f"{k}={_ARGS.repr(v)}" for k, v in kwargs.items()]
    text = f"{name}({', '.join(parts)})"
    return text if len(text) <= CALL_CHARS else text[: CALL_CHARS - 4] + "...)"


def _type_name(error: BaseException | None) -> str | None:
    if error is None:
        return None
    cls = type(error)
    module = cls.__module__
    return cls.__qualname__ if module in ("builtins", "corral") else f"{module}.{cls.__qualname__}"


def _error_line(outcome: Outcome) -> str:
    error = outcome.error
    if error is None:
        return outcome.status.value
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[0] if message else ''}".rstrip(": ")


def _exit_text(worker: dict[str, Any]) -> str | None:
    if worker["signal"]:
        return f"killed by {worker['signal']}" + (
            f" {worker['during']}" if worker["during"] else ""
        )
    if worker["exitcode"] is not None:
        return f"exit code {worker['exitcode']}"
    if worker["timeout"] is not None:
        return f"killed by corral after its timeout of {worker['timeout']:g} s"
    return None


def _tail(text: Any) -> str | None:
    if not text:
        return None
    said = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return said if len(said) <= OUTPUT_TAIL else "...\n" + said[-OUTPUT_TAIL:]


def _iso(when: float | None) -> str | None:
    if when is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(when)) + f".{int(when % 1 * 1000):03d}"


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all: a temporary file beside it, flushed to
    disk, renamed over it."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _earlier_reports(folder: Path) -> dict[str, dict[str, Any]]:
    """The reports an earlier run left here (key repr -> entry): those its index lists, and
    those it wrote after its last index (it was killed): a ``task-*.json`` that says it is
    corral's, with its Markdown twin."""
    found = _read_index(folder / INDEX)
    known = {e["json"] for e in found.values()}
    for path in folder.glob("task-*.json"):
        if path.name in known:
            continue
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if (
            isinstance(doc, dict)
            and doc.get("format") == FORMAT
            and isinstance(doc.get("key"), str)
        ):
            found.setdefault(doc["key"], {
                "key": doc["key"], "markdown": f"{path.stem}.md", "json": path.name
            })  # fmt: skip
    return found


def _read_index(path: Path) -> dict[str, dict[str, Any]]:
    """The reports an earlier run left (key repr -> entry); nothing when there is no index,
    or one that is not corral's (its files are then left alone, as foreign files are)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("corral: %s is not a readable error index (%s); starting a new one", path, exc)
        return {}
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        log.warning("corral: %s is not corral's error index; starting a new one", path)
        return {}
    found = {}
    for entry in doc.get("reports", []):
        try:
            key, md, js = entry["key"], entry["markdown"], entry["json"]
        except (KeyError, TypeError):
            continue
        if all(isinstance(x, str) and "/" not in x and x not in ("", ".", "..") for x in (md, js)):
            found[key] = {"key": key, "markdown": md, "json": js}
    return found
