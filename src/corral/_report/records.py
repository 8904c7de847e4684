"""``Report.to_records()`` and ``Report.to_dataframe()``: one flat row per attempt.

A row per attempt, not per task, so that retries, their workers and their times are all
there; ``final`` is true on a task's last attempt (filter on it for one row per task). A
task that never started (cancelled while waiting, skipped, cached without history) has one
row with its status and no attempt fields.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._outcome import Outcome

if TYPE_CHECKING:
    from .report import Report

COLUMNS = (
    "key",
    "group",
    "status",
    "final",
    "attempt",
    "attempts",
    "attempt_status",
    "worker",
    "pid",
    "queued",
    "started",
    "finished",
    "duration",
    "cpu",
    "peak_rss",
    "exitcode",
    "signal",
    "error",
)
"""The keys of every record, in this order (the DataFrame's columns)."""


def to_records(report: Report) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for outcome in report.outcomes:
        history = outcome.history
        if not history:
            rows.append(_row(outcome, 0, None))
            continue
        for number, attempt in enumerate(history, 1):
            rows.append(_row(outcome, number, attempt))
    return rows


def _row(outcome: Outcome, number: int, attempt: Any) -> dict[str, Any]:
    last = number == len(outcome.history) or not outcome.history
    if attempt is None:
        error = outcome.error
        return {
            **dict.fromkeys(COLUMNS),
            "key": outcome.key,
            "group": outcome.group,
            "status": outcome.status.value,
            "final": True,
            "attempt": 0,
            "attempts": outcome.attempts,
            "error": f"{type(error).__name__}: {error}" if error is not None else None,
        }
    return {
        "key": outcome.key,
        "group": outcome.group,
        "status": outcome.status.value,
        "final": last,
        "attempt": number,
        "attempts": outcome.attempts,
        "attempt_status": attempt.status.value,
        "worker": attempt.worker,
        "pid": attempt.pid,
        "queued": attempt.queued,
        "started": attempt.started,
        "finished": attempt.finished,
        "duration": attempt.duration,
        "cpu": attempt.cpu,
        "peak_rss": attempt.peak_rss,
        "exitcode": attempt.exitcode,
        "signal": attempt.signal,
        "error": attempt.error,
    }


def to_dataframe(report: Report) -> Any:
    try:
        import pandas as pd
    except ImportError:
        raise ImportError(
            "Report.to_dataframe() needs pandas, which is not installed: "
            "pip install pandas, or pip install 'corral[dataframe]' "
            "(or use Report.to_records(), a list of dicts)"
        ) from None
    return pd.DataFrame.from_records(to_records(report), columns=list(COLUMNS))
