"""The engine's record of each worker: a ``Slot``, and the ``InFlight`` Calls it was sent.

Engine thread only (``running_now``, on the progress thread, reads ``Slot.call`` and an
``InFlight``'s fields, which are not changed after dispatch except its deadline). A slot's
life, and the module that makes each move::

    IDLE ──send (_dispatch)──► BUSY ──Result (_engine)──► IDLE
      ▲                          │ died / killed: timeout, cancel (_crew)
      └──── restart (_crew) ◄────┘
    BUSY ──hand_over (_crew, Ctrl-C)──► HANDING OVER ──Handover / died / HANDOVER_WAIT──► killed
    BUSY/IDLE ──recycle: max tasks, memory (_crew)──► retire, restart

The slots are one list, built by the engine and handed to its collaborators, all on the engine
thread; each field has few writers, at the moves above: ``calls`` grows in ``_dispatch`` (send),
shrinks in ``_engine`` (an answer) and is emptied in ``_crew`` (death, kill); which functions the
worker holds is the backend's record, not the slot's (``_backends.process``); ``pid``,
``alive``, ``last_words`` and ``handover`` are the Crew's alone; ``tasks_done`` counts
in ``_engine`` and is reset by the Crew.

Invariant: a Call's ``InFlight`` is appended to ``Slot.calls`` before the Call is sent, so a
death or a timeout is always attributed to the Call the worker really had.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._record import Record

if TYPE_CHECKING:
    from ._batch import Batch
    from ._deadlines import Deadline


class InFlight(Record):
    """One Call sent to a worker and not yet answered."""

    __slots__ = ("call_id", "batch", "positions", "started", "expected", "deadline")  # noqa: RUF023

    def __init__(
        self,
        call_id: int,
        batch: Batch,
        positions: Sequence[int],
        started: float,
        expected: float | None = None,
        deadline: Deadline | None = None,
    ) -> None:
        self.call_id = call_id
        self.batch = batch
        self.positions = positions
        self.started = started
        self.expected = expected
        self.deadline = deadline


class Slot(Record):
    """The engine's handle on one worker. ``calls`` are the Calls sent and not yet answered,
    oldest (running) first; more are queued for the worker ahead of time when calls are
    short, so the worker never waits for a coordinator that the OS has not yet scheduled
    (see ``_dispatch.PREFETCH_SECONDS``, ``QUEUE_DEPTH``). A queued Call may still wait in
    the backend's outbox (``_backends.outbox``) until the pipe takes it.

    ``last_words``: why the worker's loop ended, if it said (InitFailed). ``handover``: set
    while the worker is asked to hand over its finished items (Ctrl-C): the bound."""

    __slots__ = ("pid", "calls", "alive", "tasks_done", "last_words", "handover")  # noqa: RUF023

    def __init__(
        self,
        pid: int | None = None,
        calls: deque[InFlight] | None = None,
        alive: bool = False,
        tasks_done: int = 0,
        last_words: str | None = None,
        handover: Deadline | None = None,
    ) -> None:
        self.pid = pid
        self.calls: deque[InFlight] = deque() if calls is None else calls
        self.alive = alive
        self.tasks_done = tasks_done
        self.last_words = last_words
        self.handover = handover

    @property
    def call(self) -> InFlight | None:
        return self.calls[0] if self.calls else None
