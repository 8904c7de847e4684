"""The live progress display: a bar, counts, retries, workers, and the tasks running now.

    engine thread                              display thread (never the engine's)
    ─────────────                              ────────────────────────────────────
    Batch ── advance(ok, failed, ...) ──► counters (plain ints: one add per Call)
    Events ─ TaskRetried, Worker* ──────► counters (a subscriber of rare kinds only)
                                               rich Live (terminal, Jupyter): redraws 8 times/s,
                                               reading the counters and asking the engine
                                               which tasks run (``Engine.running_now``)
                                               PlainLines (not a terminal: CI, a log file,
                                               nohup): one line every ``progress_interval`` s,
                                               written by one thread for the process (``ticker``)

Two feeds, for cost: the counts of finished tasks come from the batch's ``Observer`` hook,
once per Call (a chunk of 20,000 trivial tasks is one call), because a subscriber of the
per-task events costs ~3 µs per event, more than such a task (``_events``); retries and
worker starts and deaths, a few per run, come from the event stream, subscribed by kind, so
that the per-task events stay unbuilt. Nothing drawn runs on the engine thread: it only adds
to counters. Nothing here can stop a batch: a drawing error is logged and the display turned
off.

``progress=None`` picks: a terminal (stderr is a TTY) or a Jupyter kernel gets rich's live
display (rich renders it in a notebook cell itself); anything else gets plain lines, the
first after ``progress_interval`` seconds (a short run prints nothing). ``True``: rich's
display wherever; ``False``: nothing.

Each bar counts the tasks that ended (ok, failed, or cached: taken from an earlier run) against
its total, and says how many failed and were cached; cancelled tasks (Ctrl-C) did not end, so
they do not move it: after Ctrl-C a bar stops where the work stopped and says how many were
cancelled.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .._events import (
    Events,
    TaskRetried,
    WorkerDied,
    WorkerKilled,
    WorkerRecycled,
    WorkerRetired,
    WorkerStarted,
)
from .ticker import ticker

if TYPE_CHECKING:  # rich is imported only when a display is shown: workers never load it
    from rich.console import Console, RenderableType

log = logging.getLogger("corral")

RUNNING_SHOWN = 8
"""How many running tasks the display lists (the longest-running first)."""

GROUPS_SHOWN = 12
"""Groups with a bar of their own; a batch with more groups shows only the total."""


class ProgressView:
    def __init__(
        self,
        total: int,
        running: Callable[[], list[tuple[Any, float]]],
        console: Console,
        groups: Sequence[str | None] | None = None,
        workers: int = 0,
    ) -> None:
        from rich.live import Live
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.failed = 0
        self.cancelled = 0
        self.cached = 0
        self.fleet = Fleet(workers)
        self._running = running
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[failed]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
        )
        self._task = self._progress.add_task("[bold]corral", total=total, failed="")
        self._group_counts: dict[str, Counter[str]] = {}
        self._groups: dict[str, Any] = {}
        totals = Counter(g for g in groups or () if g is not None)
        if 1 < len(totals) <= GROUPS_SHOWN:
            for group, count in totals.items():
                self._groups[group] = self._progress.add_task(
                    f"  {_short(group)}", total=count, failed=""
                )
        self._live = Live(self, console=console, refresh_per_second=8, transient=False)

    def advance(
        self,
        n_ok: int,
        n_failed: int,
        groups: list[str | None] | None = None,
        n_cancelled: int = 0,
        n_cached: int = 0,
    ) -> None:
        if n_failed or n_cancelled or n_cached:
            self.failed += n_failed
            self.cancelled += n_cancelled
            self.cached += n_cached
            notes = _notes(self.failed, self.cancelled, self.cached)
            self._progress.update(self._task, failed=notes)
        if n_ok + n_failed + n_cached:
            self._progress.advance(self._task, n_ok + n_failed + n_cached)
        if groups and self._groups:
            kind = (
                "cancelled"
                if n_cancelled
                else "failed"
                if n_failed
                else "cached"
                if n_cached
                else "ok"
            )
            self._advance_groups(groups, kind)

    def _advance_groups(self, groups: list[str | None], kind: str) -> None:
        """``groups`` of tasks that all ended the same way, ``kind``."""
        for group, count in Counter(g for g in groups if g is not None).items():
            task = self._groups.get(group)
            if task is None:
                continue
            if kind != "ok":
                counts = self._group_counts.setdefault(group, Counter())
                counts[kind] += count
                notes = _notes(counts["failed"], counts["cancelled"], counts["cached"])
                self._progress.update(task, failed=notes)
            if kind != "cancelled":
                self._progress.advance(task, count)

    def __rich__(self) -> RenderableType:
        from rich.console import Group
        from rich.table import Table

        parts: list[RenderableType] = [self._progress]
        parts.append(f"  [dim]{self.fleet.said()}[/dim]")
        try:
            running = sorted(self._running(), key=lambda kv: -kv[1])
        except Exception:  # the engine changed under us; skip this frame
            running = []
        if running:
            table = Table.grid(padding=(0, 2))
            for key, seconds in running[:RUNNING_SHOWN]:
                table.add_row("  [dim]running[/dim]", _short(key), f"{seconds:6.1f} s")
            if len(running) > RUNNING_SHOWN:
                table.add_row("", f"[dim]... {len(running) - RUNNING_SHOWN} more[/dim]", "")
            parts.append(table)
        return Group(*parts)

    def __enter__(self) -> ProgressView:
        self._live.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        with contextlib.suppress(Exception):
            self._live.stop()


RARE_KINDS = (TaskRetried, WorkerStarted, WorkerDied, WorkerKilled, WorkerRecycled, WorkerRetired)
"""What a display subscribes to (``Events.subscribe(kinds=...)``)."""


class Fleet:
    """Retries of one batch and the live workers, counted from events (engine thread)."""

    def __init__(self, workers: int, batch: int | None = None) -> None:
        self.workers = workers  # subscribed after the Pool started them: they are counted
        self.retried = 0
        self.batch = batch

    def on_event(self, event: Any) -> None:
        kind = type(event)
        if kind is TaskRetried:
            if self.batch is None or event.batch == self.batch:
                self.retried += 1
        elif kind is WorkerStarted:
            self.workers += 1
        else:  # died, killed, recycled, retired: gone (a replacement starts next)
            self.workers = max(0, self.workers - 1)

    def said(self) -> str:
        retried = f", {self.retried} retried" if self.retried else ""
        return f"{self.workers} worker{'s' if self.workers != 1 else ''}{retried}"


class PlainLines:
    """Progress for a log, not a terminal: every ``interval`` seconds one line of plain text
    (done/total, failed, retried, workers, rate, ETA), no control characters; and a last
    line when the batch ends, if any was written before. Written by the process's one ticker
    thread (``ticker``), not a thread per batch."""

    def __init__(self, total: int, interval: float, workers: int, stream: Any = None) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.cancelled = 0
        self.fleet = Fleet(workers)
        self._interval = interval
        self._stream = stream if stream is not None else sys.stderr
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._written = 0
        self._token: int | None = None  # while shown: its place on the ticker (``ticker``)

    def advance(
        self,
        n_ok: int,
        n_failed: int,
        groups: list[str | None] | None = None,
        n_cancelled: int = 0,
        n_cached: int = 0,
    ) -> None:
        self.done += n_ok + n_failed + n_cached
        self.failed += n_failed
        self.cancelled += n_cancelled

    def line(self, now: float | None = None) -> str:
        elapsed = max(1e-9, (now or time.monotonic()) - self._started)
        rate = self.done / elapsed
        left = self.total - self.done - self.cancelled
        eta = _duration(left / rate) if rate > 0 and left > 0 else "-"
        pct = f" ({100 * self.done // self.total}%)" if self.total else ""
        parts = [f"corral: {self.done}/{self.total} done{pct}", f"{self.failed} failed"]
        if self.cancelled:
            parts.append(f"{self.cancelled} cancelled")
        parts += [
            self.fleet.said(), f"{rate:.3g} tasks/s", f"ETA {eta}",
            f"elapsed {_duration(elapsed)}",
        ]  # fmt: skip
        return ", ".join(parts)

    def _write(self) -> None:
        try:
            self._stream.write(self.line() + "\n")
            self._stream.flush()
            self._written += 1
        except Exception:  # a closed stream: stop writing, never stop the batch
            log.debug("corral: progress line could not be written", exc_info=True)
            self._stop.set()

    def _tick(self) -> None:
        if not self._stop.is_set():
            self._write()

    def __enter__(self) -> PlainLines:
        self._token = ticker().add(self._tick, self._interval)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._token is not None:
            ticker().remove(self._token)  # no line is being written once this returns
        if self._written and not self._stop.is_set():
            self._write()
        self._stop.set()


def _duration(seconds: float) -> str:
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _notes(failed: int, cancelled: int, cached: int = 0) -> str:
    """What a bar says beside its counts: how many failed, were cancelled, were cached."""
    notes = []
    if cached:
        notes.append(f"[cyan]{cached} cached[/cyan]")
    if failed:
        notes.append(f"[red]{failed} failed[/red]")
    if cancelled:
        notes.append(f"[yellow]{cancelled} cancelled[/yellow]")
    return " ".join(notes)


def _short(key: Any) -> str:
    text = str(key)
    return text if len(text) <= 60 else "..." + text[-57:]


def in_jupyter() -> bool:
    """Whether this process is a Jupyter kernel (without importing IPython)."""
    if "ipykernel" not in sys.modules:
        return False
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def progress_enabled(progress: bool | None) -> bool:
    """Whether rich's live display is shown. ``None``: on a terminal or in Jupyter."""
    if progress is None:
        return sys.stderr.isatty() or in_jupyter()
    return progress


@contextlib.contextmanager
def make_observer(
    progress: bool | None,
    total: int,
    running: Callable[[], list[tuple[Any, float]]],
    groups: Sequence[str | None] | None = None,
    *,
    events: Events | None = None,
    batch: int | None = None,
    workers: int = 0,
    interval: float = 30.0,
) -> Iterator[ProgressView | PlainLines | None]:
    """The display of one batch (see the module docstring for which), subscribed to
    ``events`` for its retries and the workers while it runs."""
    if progress is False:
        yield None
        return
    view: ProgressView | PlainLines
    if progress_enabled(progress):
        from rich.console import Console

        view = ProgressView(total, running, Console(stderr=True), groups, workers)
    else:
        view = PlainLines(total, interval, workers)
    view.fleet.batch = batch
    if events is not None:
        events.subscribe(view.fleet.on_event, kinds=RARE_KINDS)
    try:
        with view:
            yield view
    finally:
        if events is not None:
            events.unsubscribe(view.fleet.on_event)
