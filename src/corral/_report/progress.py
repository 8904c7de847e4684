"""The live progress display: a bar, counts, and the tasks running right now.

An ``Observer`` of one batch: the engine thread calls ``advance`` as tasks finish; rich's own
refresh thread redraws a few times a second, reading the counters and asking the engine which
tasks are running (``Engine.running_now``). Nothing here can stop a batch: a drawing error
is logged and the display turned off.

Each bar counts the tasks that ended (ok, failed, or cached: taken from an earlier run) against
its total, and says how many failed and were cached; cancelled tasks (Ctrl-C) did not end, so
they do not move it: after Ctrl-C a bar stops where the work stopped and says how many were
cancelled.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

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


def progress_enabled(progress: bool | None) -> bool:
    """``None`` means: show progress when stderr is an interactive terminal."""
    if progress is None:
        return sys.stderr.isatty()
    return progress


@contextlib.contextmanager
def make_observer(
    progress: bool | None,
    total: int,
    running: Callable[[], list[tuple[Any, float]]],
    groups: Sequence[str | None] | None = None,
) -> Iterator[ProgressView | None]:
    if not progress_enabled(progress):
        yield None
        return
    from rich.console import Console

    view = ProgressView(total, running, Console(stderr=True), groups)
    with view:
        yield view
