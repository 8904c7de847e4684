"""``corral.record(effect)``: a task's effect log, kept where the task runs.

    task code (worker process, or the caller's thread with the serial backend)
      corral.record(effect) ──► the running Call's log ──► [(item index, effect), ...]
                                     │ at the Call's end (execute): grouped by item, the
                                     │ failed items' entries dropped
                                     ▼
                              Result.effects {index: (effect, ...)} ──► the coordinator
                              (Outcome.effects, Report.effects, on_effect: ``_effects``)

Ownership: ``execute`` points ``current`` at the running Call's ``Progress`` on the thread that
runs it, for the Call's duration, and restores it whatever way the Call ends (a serial task may
run a nested serial batch on the same thread); ``record`` only appends to that Progress's
``effects`` (made on the first record). The pointer is thread-local: a task records from the
thread that runs it (a thread the task starts has no log and gets the same clear error as code
outside any task), and two serial Pools driven from two threads never mix their logs.

Which item an effect belongs to costs the item loops nothing: both keep the invariant that
the running item is ``len(progress.values)`` (see ``execute.Progress``). Cost when unused:
one thread-local load and two stores per Call, and one truth test.
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
    progress: Any = None
    """The running Call's ``execute.Progress`` (its ``values`` and ``effects``), or None."""


current = _Current()
"""Set by ``execute`` around each Call's items: one load and two stores per Call."""


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
    progress = current.progress
    if progress is None:
        raise CorralError(OUTSIDE)
    log = progress.effects
    if log is None:  # the Call's first effect
        log = progress.effects = []
    log.append((len(progress.values), effect))


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
