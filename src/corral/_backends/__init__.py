"""Backends run Calls: the serial one in this process, the process one in worker processes.

The engine talks to a backend through this small interface and owns all decisions; a backend
only starts, feeds, watches and kills. Events come back from ``wait``:

    ("result", slot, payload)   a worker answered the Call it was given
    ("died", slot, (exitcode, call_id, index))
                                the slot's current worker is gone (exitcode < 0: signal);
                                it was running item ``index`` of Call ``call_id`` (index -1: none)
    ("init_failed", slot, err)  the slot's worker initializer raised
"""

from __future__ import annotations

from typing import Any, Protocol

Event = tuple[str, int, Any]


class Backend(Protocol):
    slots: int

    def start_worker(self, slot: int) -> int | None:
        """Start (or restart) the worker of ``slot``; its pid, or None when in-process."""
        ...

    def send(self, slot: int, call: Any) -> None: ...

    def wait(self, timeout: float | None) -> list[Event]: ...

    def running_item(self, slot: int) -> tuple[int, int, float]:
        """``(call_id, index, monotonic start)`` of the slot's running item; index -1 if none."""
        ...

    def kill(self, slot: int) -> None:
        """Stop the slot's worker now: SIGTERM to its group, SIGKILL after the grace period."""
        ...

    def hand_over(self, slot: int) -> Any:
        """Ask the slot's worker for the finished part of its running Call (Ctrl-C). The
        answer is a ``Handover``: returned here when the Call ran in this process, otherwise
        None now and the ``Handover`` arrives later as a message (or never, if the worker
        cannot answer: the engine waits a bounded time)."""
        ...

    def retire(self, slot: int) -> None:
        """Ask the slot's idle worker to exit when it reads its next message."""
        ...

    def close(self, timeout: float) -> None:
        """Stop every worker; return when none is left (killing stragglers after ``timeout``)."""
        ...
