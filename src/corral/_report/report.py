"""The Report: every Outcome of one batch, in task order, and what can be counted from it.

Where the time went (``utilisation``, ``concurrency()``, ...) is computed by ``telemetry``;
the exports are ``records`` (``to_records``, ``to_dataframe``), ``trace`` (``to_trace``) and
``html`` (``to_html``). Each is imported when first used.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._outcome import Outcome, Status, result_of
from .._public import public

if TYPE_CHECKING:
    from .._outcome import Attempt
    from .telemetry import Happening, WorkerSpan, WorkerStartup


@public
@dataclass(frozen=True)
class Report:
    """Everything a batch produced, in task order, and where its time went.

    Attributes:
        outcomes: one ``Outcome`` per task, in task order (each with its ``history``).
        wall_seconds: the run's wall time (also ``wall``).
        workers: how many worker slots the pool had.
        started: when the batch was submitted (``time.time()``); None when unknown.
        worker_spans: the lives of the worker processes that overlapped the run
            (``telemetry.WorkerSpan``: slot, pid, started, ended, how it ended).
        happenings: other rare events heard during the run (a service's start, ...).
    """

    outcomes: Sequence[Outcome]
    wall_seconds: float = 0.0
    workers: int = 0
    started: float | None = None
    worker_spans: tuple[WorkerSpan, ...] = ()
    happenings: tuple[Happening, ...] = ()
    journal: Any = None
    """With ``journal=``: a ``JournalSummary`` (``_journal.session``) of what the journal did
    for this call: how many tasks were cached, which ran again because their function or
    arguments changed, which had been interrupted, which failures ran again."""
    # why the batch drained (``"SIGUSR1"``, ``"SIGTERM"``, ``"deadline"``), or None: it did not
    # (docs/reliability.md). A drained batch's tasks that did not finish are ``cancelled``.
    drained: str | None = None

    @property
    def results(self) -> list[Any]:
        """Values in task order, with a ``Failure`` where a task did not succeed."""
        return [result_of(o) for o in self.outcomes]

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def ok(self) -> bool:
        ok, cached = Status.OK, Status.CACHED
        return all(
            o.status is ok or (o.status is cached and o.error is None) for o in self.outcomes
        )

    @property
    def effects(self) -> list[tuple[Any, Any]]:
        """``(key, effect)`` of every effect the tasks recorded (``corral.record``) and
        kept (those of the tasks that succeeded, cached successes included): in task order,
        then in the order each task recorded them (what ``on_effect`` is given, in the same
        order)."""
        return [(o.key, effect) for o in self.outcomes if o.ok for effect in o.effects]

    def counts(self) -> dict[Status, int]:
        counts = dict.fromkeys(Status, 0)
        for outcome in self.outcomes:
            counts[outcome.status] += 1
        return counts

    def by_group(self) -> dict[Hashable | None, dict[str, int]]:
        """Counts by status for each group (``None`` for tasks without one), groups in the
        order they first appear: ``{"tas": {"ok": 2, "failed": 1, ...}, ...}``, every status
        value a key (plain strings; ``Status`` members find the same entries)."""
        groups: dict[Hashable | None, dict[str, int]] = {}
        for outcome in self.outcomes:
            counts = groups.get(outcome.group)
            if counts is None:
                counts = groups[outcome.group] = {s.value: 0 for s in Status}
            counts[outcome.status.value] += 1
        return groups

    # -- where the time went (telemetry) --------------------------------------------------
    @functools.cached_property
    def _timed(self) -> list[tuple[Outcome, int, Attempt, float, float]]:
        """Every attempt of this run with a known start and end (computed once: 100,000
        tasks). A cached task's attempts belong to an earlier run: not counted here (nor in
        utilisation, the trace or the timeline)."""
        from .telemetry import timed

        cached = Status.CACHED
        return list(timed([o for o in self.outcomes if o.status is not cached]))

    @functools.cached_property
    def _startups(self) -> list[WorkerStartup]:
        from .telemetry import worker_startup

        return worker_startup(self)

    @property
    def wall(self) -> float:
        """The run's wall time in seconds, from submission to the last outcome."""
        return self.wall_seconds

    @functools.cached_property
    def busy_seconds(self) -> float:
        """Worker-seconds spent running tasks (every attempt, retries included)."""
        from .telemetry import busy_seconds

        return busy_seconds(self)

    @property
    def utilisation(self) -> float:
        """Busy worker-seconds / available worker-seconds (``workers * wall``), 0 to 1."""
        available = self.workers * self.wall_seconds
        return self.busy_seconds / available if available > 0 else 0.0

    @property
    def speedup(self) -> float:
        """The sum of the tasks' wall times / the run's wall time: what running them in
        parallel gained over running them one after another (start-up costs included)."""
        return self.busy_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def tasks_per_second(self) -> float:
        """Tasks that ran (not cached, not cancelled before they started) per wall second."""
        from .telemetry import tasks_run

        return tasks_run(self) / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def worker_startup(self) -> list[WorkerStartup]:
        """Each worker process of the run: slot, pid, when it was started, when it ran its
        first task, and the seconds in between (None if it ran none)."""
        return list(self._startups)

    def idle_seconds(self) -> dict[int, float]:
        """For each worker slot, the seconds of the run it was neither starting nor running
        a task (waiting for work, or for the coordinator)."""
        from .telemetry import idle_seconds

        return idle_seconds(self)

    def slowest(self, n: int = 10) -> list[Outcome]:
        """The ``n`` tasks whose last attempt took longest, longest first."""
        from .telemetry import slowest

        return slowest(self, n)

    def concurrency(self, bins: int | None = None) -> list[tuple[float, float]]:
        """Tasks running at once over time (seconds from the run's start): the exact steps
        ``[(t, running), ...]``, or with ``bins`` the mean over that many equal slices."""
        from .telemetry import concurrency

        return concurrency(self, bins)

    # -- exports --------------------------------------------------------------------------
    def to_records(self) -> list[dict[str, Any]]:
        """One plain dict per attempt (a task that never ran: one with its status only)."""
        from .records import to_records

        return to_records(self)

    def to_dataframe(self) -> Any:
        """``to_records()`` as a pandas DataFrame (needs pandas: ``pip install pandas``)."""
        from .records import to_dataframe

        return to_dataframe(self)

    def to_trace(self, path: str | os.PathLike[str]) -> None:
        """Write a Chrome trace-event JSON file (open it in ui.perfetto.dev or
        chrome://tracing): one track per worker slot, one event per attempt, the workers'
        start-ups, peak memory as counters."""
        from .trace import write_trace

        write_trace(self, path)

    def to_html(self, path: str | os.PathLike[str]) -> None:
        """Write one self-contained HTML file (no network): summary, timeline per worker,
        utilisation over time, slowest tasks, failures with their tracebacks."""
        from .html import write_html

        write_html(self, path)

    def summary(self) -> str:
        """A human-readable table: counts by status, timing, and each failure with its reason."""
        from .summary import render_summary

        return render_summary(self)

    def __repr__(self) -> str:
        counts = ", ".join(f"{s.value}={n}" for s, n in self.counts().items() if n)
        return (
            f"<Report {len(self.outcomes)} tasks: {counts or 'empty'}; {self.wall_seconds:.2f} s>"
        )
