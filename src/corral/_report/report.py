"""The Report: every Outcome of one batch, in task order, and what can be counted from it."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from .._outcome import Outcome, Status, result_of
from .._public import public


@public
@dataclass(frozen=True)
class Report:
    """Everything a batch produced, in task order."""

    outcomes: Sequence[Outcome]
    wall_seconds: float = 0.0
    workers: int = 0
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

    def summary(self) -> str:
        """A human-readable table: counts by status, timing, and each failure with its reason."""
        from .summary import render_summary

        return render_summary(self)

    def __repr__(self) -> str:
        counts = ", ".join(f"{s.value}={n}" for s, n in self.counts().items() if n)
        return (
            f"<Report {len(self.outcomes)} tasks: {counts or 'empty'}; {self.wall_seconds:.2f} s>"
        )
