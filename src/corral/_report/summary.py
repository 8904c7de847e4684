"""``Report.summary()``: the human-readable table of a finished batch."""

from __future__ import annotations

import io
from collections.abc import Hashable
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .._outcome import Status
from .._reasons import reason_lines

if TYPE_CHECKING:
    from .report import Report

FAILURES_SHOWN = 20
REASON_LINES = 12
"""Lines of one failure's reason in the table; the middle ones are left out past this."""
STATUS_STYLE = {
    Status.OK: "green",
    Status.FAILED: "red",
    Status.TIMEOUT: "yellow",
    Status.CRASHED: "magenta",
    Status.CANCELLED: "dim",
    Status.SKIPPED: "dim",
    Status.CACHED: "cyan",
}


def render_summary(report: Report, *, width: int = 100) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False)
    console.print(_totals(report))
    groups = report.by_group()
    if any(g is not None for g in groups):
        console.print(_groups(groups))
    failures = report.failures
    if failures:
        console.print(_failures(report))
    return console.file.getvalue()  # type: ignore[attr-defined,no-any-return]


def _totals(report: Report) -> Table:
    outcomes = report.outcomes
    plural = "s" if report.workers != 1 else ""
    table = Table(
        title=f"corral: {len(outcomes)} tasks in {report.wall_seconds:.2f} s "
        f"on {report.workers} worker{plural}",
        min_width=72,
    )
    table.add_column("status")
    table.add_column("tasks", justify="right")
    table.add_column("share", justify="right")
    for status, count in report.counts().items():
        if count:
            share = f"{100 * count / len(outcomes):.1f}%"
            table.add_row(f"[{STATUS_STYLE[status]}]{status.value}", str(count), share)
    durations = [o.duration for o in outcomes if o.duration is not None]
    cpu = sum(o.cpu_seconds or 0.0 for o in outcomes)
    if durations:
        table.caption = (
            f"task time: mean {sum(durations) / len(durations):.3g} s, max {max(durations):.3g} s; "
            f"CPU {cpu:.3g} s"
        )
    return table


def _groups(groups: dict[Hashable | None, dict[str, int]]) -> Table:
    table = Table(title="by group", min_width=72)
    table.add_column("group")
    statuses = [s.value for s in Status if any(counts[s.value] for counts in groups.values())]
    for status in statuses:
        table.add_column(status, justify="right")
    table.add_column("tasks", justify="right")
    for group, counts in groups.items():
        shown = [str(counts[s]) for s in statuses]
        label = "(none)" if group is None else escape(str(group))
        table.add_row(label, *shown, str(sum(counts.values())))
    return table


def _failures(report: Report) -> Table:
    table = Table(title="failures", min_width=72)
    table.add_column("task")
    table.add_column("status")
    table.add_column("attempts", justify="right")
    table.add_column("reason", overflow="fold")
    failures = report.failures
    for outcome in failures[:FAILURES_SHOWN]:
        reason = "\n".join(reason_lines(outcome.error, REASON_LINES))
        table.add_row(
            escape(repr(outcome.key)),
            f"[{STATUS_STYLE[outcome.status]}]{outcome.status.value}",
            str(outcome.attempts),
            escape(reason),
        )
    if len(failures) > FAILURES_SHOWN:
        table.caption = f"... and {len(failures) - FAILURES_SHOWN} more (report.failures)"
    return table
