"""The live progress display: a bar, counts, and the tasks running right now.

An ``Observer`` of one batch: the engine thread calls ``advance`` as tasks finish; rich's own
refresh thread redraws a few times a second, reading the counters and asking the engine which
tasks are running (``Engine.running_now``). Nothing here can stop a batch: a drawing error
is logged and the display turned off.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # rich is imported only when a display is shown: workers never load it
    from rich.console import Console, RenderableType

log = logging.getLogger("corral")

RUNNING_SHOWN = 8
"""How many running tasks the display lists (the longest-running first)."""


class ProgressView:
    def __init__(
        self, total: int, running: Callable[[], list[tuple[Any, float]]], console: Console
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
        self._running = running
        self._progress = Progress(
            TextColumn("[bold]corral"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[failed]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
        )
        self._task = self._progress.add_task("tasks", total=total, failed="")
        self._live = Live(self, console=console, refresh_per_second=8, transient=False)

    def advance(self, n_ok: int, n_failed: int) -> None:
        if n_failed:
            self.failed += n_failed
            self._progress.update(self._task, failed=f"[red]{self.failed} failed")
        self._progress.advance(self._task, n_ok + n_failed)

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
    progress: bool | None, total: int, running: Callable[[], list[tuple[Any, float]]]
) -> Iterator[ProgressView | None]:
    if not progress_enabled(progress):
        yield None
        return
    from rich.console import Console

    view = ProgressView(total, running, Console(stderr=True))
    with view:
        yield view
