"""``corral.record(effect)``: a task's effect log, kept where the task runs.

    task code (worker process, or the caller's thread with the serial backend)
      corral.record(effect) ──► the running Call's log ──► [(item index, effect), ...]
                                     │ at the Call's end (execute): grouped by item, the
                                     │ failed items' entries dropped
                                     ▼
                              Result.effects {index: (effect, ...)} ──► the coordinator
                              (Outcome.effects, Report.effects, on_effect: ``_effects``)

Ownership: ``execute`` opens a log on the thread that runs a Call, for the Call's duration
(``running``), and closes it whatever way the Call ends; ``record`` only appends. The log is
thread-local: a task records from the thread that runs it (a thread the task starts has no
log and gets the same clear error as code outside any task), and two serial Pools driven from
two threads never mix their logs.

Which item an effect belongs to costs the item loops nothing: both keep the invariant that
the running item is ``len(progress.values)`` (see ``execute.Progress``), and the log holds
that list. Cost when unused: two thread-local stores per Call, and one truth test.
"""

from __future__ import annotations

import threading
from typing import Any

from .._errors import CorralError
from .._public import public

OUTSIDE = (
    "corral.record() was called outside a corral task: it records an effect of the task that "
    "is running on this thread (a function run by corral.map, imap, run, a Pool or an "
    "Executor), and no task is running on this thread. Call it from the task itself, not from "
    "a thread the task started or from the coordinator"
)


class _Current(threading.local):
    log: list[tuple[int, Any]] | None = None
    values: list[Any] | None = None  # the running Call's values: its length is the item running


_current = _Current()


@public
def record(effect: Any) -> None:
    """Append ``effect`` to the running task's effect log.

    The effects of a task that succeeds reach the coordinator with its result:
    ``Outcome.effects``, ``Report.effects``, and ``on_effect=fn`` (``fn(key, effect)`` on
    the caller's thread, in task-submission order, then record order). The effects of an
    attempt that fails, times out, crashes or is retried are discarded. ``effect`` must
    pickle (it travels from the worker process); a task whose effect does not pickle fails
    with a ``SerializationError`` naming it.

    Raises ``corral.CorralError`` when no corral task runs on this thread.
    """
    log = _current.log
    if log is None:
        raise CorralError(OUTSIDE)
    log.append((len(_current.values), effect))  # type: ignore[arg-type]


def running(values: list[Any]) -> tuple[list[tuple[int, Any]], Any]:
    """Open a log for the Call whose item loop fills ``values``; returns the log and what
    ``stopped`` restores (a serial task may run a nested serial batch on the same thread)."""
    previous = (_current.log, _current.values)
    log: list[tuple[int, Any]] = []
    _current.log = log
    _current.values = values
    return log, previous


def stopped(previous: Any) -> None:
    _current.log, _current.values = previous


def by_item(
    log: list[tuple[int, Any]], errors: dict[int, Any] | None, n: int
) -> dict[int, tuple[Any, ...]] | None:
    """The effects of the first ``n`` items that succeeded, grouped by item, in record order;
    a failed item's, and a running (unfinished) item's, are dropped."""
    grouped: dict[int, list[Any]] = {}
    for index, effect in log:
        if index < n and not (errors and index in errors):
            grouped.setdefault(index, []).append(effect)
    return {index: tuple(effects) for index, effects in grouped.items()} or None
