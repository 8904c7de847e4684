"""The types of the backend contract (described in ``_backends/__init__``): the events a
backend's ``wait`` returns, its capability flags, a prepared Call, the ``Backend`` protocol
and what a factory is given. Imported by the engine and by every backend.

The records are NamedTuples (immutable, typed) and ``Prepared`` a plain class, not dataclasses:
a dataclass compiles its methods from source at every import, ~1 ms a class on the path of
every first ``corral.map`` (issue 15, start-up)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from .._functions import FunctionTable
    from .._messages import Call, CallFailed, Handover, InitFailed, Logged, Ready, Result
    from .._options import PoolOptions


class Message(NamedTuple):
    slot: int
    message: Result | CallFailed | InitFailed | Handover | Ready | Logged


class Undecodable(NamedTuple):
    slot: int
    error: BaseException


class Died(NamedTuple):
    slot: int
    exitcode: int | None
    call_id: int
    index: int  # type: ignore[assignment]  # shadows tuple.index: never called on a Died
    # How many items of Call ``call_id`` had begun (-1: unknown): for a death in no item
    # (``index`` -1), between two items or after the last, which of them ran.
    begun: int = -1


Event = Message | Undecodable | Died


class Remains(NamedTuple):
    """What a worker left for the coordinator (``_backends.remains``): a fatal signal's
    traceback (``stack``), and the running task's output so far (``capture_output``)."""

    stack: str | None
    stdout: str | None
    stderr: str | None


class Capabilities(NamedTuple):
    can_kill_one_call: bool
    can_queue_calls: bool
    shares_memory_with_coordinator: bool
    has_running_stamp: bool
    runs_in_caller_thread: bool
    # The shortest worthwhile Call (seconds of task time): a round trip's worth. Automatic
    # chunks of short tasks are made at least this long (``Batch.chunk_size``).
    call_floor_seconds: float = 0.0
    # How long a worker asked for a hand-over (Ctrl-C) gets to answer before it is stopped
    # without it: a pipe answers in microseconds, a round trip through a scheduler does not.
    handover_seconds: float = 2.0


class Prepared:
    """A Call as its backend will send it: ``payload`` (bytes, or the Call itself in-process;
    None: nothing to send), the items it could not encode (``rejected``: offset in the Call as
    given → error; they are not sent, and the Call's items no longer include them), ``failed``
    (the rest could not be encoded either: nothing is sent) and the bytes of the arguments (for
    size warnings; None when not measured). Mutable: the backend corrects ``argument_bytes``."""

    __slots__ = ("argument_bytes", "failed", "payload", "rejected")

    def __init__(
        self,
        payload: Any,
        rejected: dict[int, BaseException] | None = None,
        failed: BaseException | None = None,
        argument_bytes: int | None = None,
    ) -> None:
        self.payload = payload
        self.rejected: dict[int, BaseException] = {} if rejected is None else rejected
        self.failed = failed
        self.argument_bytes = argument_bytes

    def __repr__(self) -> str:
        return (
            f"Prepared(payload={self.payload!r}, rejected={self.rejected!r}, "
            f"failed={self.failed!r}, argument_bytes={self.argument_bytes!r})"
        )


class Backend(Protocol):
    slots: int
    capabilities: Capabilities
    start_method: str | None  # how workers start (None: no processes): for ``_sharing.share``

    def start_worker(self, slot: int) -> int | None: ...

    def prepare(self, slot: int, call: Call) -> Prepared: ...

    def send(self, slot: int, prepared: Prepared) -> None: ...

    def forget(self, fn_id: int) -> None: ...

    def wait(self, timeout: float | None) -> Sequence[Event]: ...

    def running_item(self, slot: int) -> tuple[int, int, float]: ...

    def kill(self, slot: int) -> None: ...

    def hand_over(self, slot: int) -> Handover | None: ...

    def dump_stack(self, slot: int) -> str | None:
        """Every thread's Python stack in the slot's live worker (asked before it is killed
        for a timeout), or None when the backend cannot tell."""
        ...

    def remains(self, slot: int) -> Remains:
        """What the slot's worker (alive, or dead and not yet replaced) left: see Remains."""
        ...

    def retire(self, slot: int) -> None: ...

    def close(self, timeout: float) -> None: ...


class BackendSetup(NamedTuple):
    """What a Pool gives a backend factory: its resolved worker count, options, function
    table (pickled per ``capabilities``), initializer (not pickled) and the engine's wakeup
    pipe (a byte on it must end ``wait``)."""

    workers: int
    options: PoolOptions
    functions: FunctionTable
    initializer: tuple[Callable[..., Any], tuple[Any, ...]] | None
    wakeup: int


class BackendFactory(NamedTuple):
    """How the Pool makes a backend of one name; ``capabilities`` are known before it is
    made (they choose the function table and the driver)."""

    create: Callable[[BackendSetup], Backend]
    capabilities: Capabilities


PROCESS = Capabilities(
    can_kill_one_call=True,
    can_queue_calls=True,
    shares_memory_with_coordinator=False,
    has_running_stamp=True,
    runs_in_caller_thread=False,
)
SERIAL = Capabilities(
    can_kill_one_call=False,
    can_queue_calls=False,
    shares_memory_with_coordinator=True,
    has_running_stamp=False,
    runs_in_caller_thread=True,
)
DASK = Capabilities(
    # The engine times and kills Calls (the Dask worker kills the child process that runs
    # one); one Call per slot at a time: Dask queues, corral decides.
    can_kill_one_call=True,
    can_queue_calls=False,
    shares_memory_with_coordinator=False,
    has_running_stamp=True,
    runs_in_caller_thread=False,
    # A Call's round trip through the scheduler is milliseconds (hundreds on a loaded
    # machine), not the ~100 µs of a pipe: without a floor, 40 ms tasks went two per Call
    # and ran 2.4x slower than client.map (benchmarks/bench_dask.py).
    call_floor_seconds=0.2,
    # client.run to the Dask worker, a signal to its child, the answer back as the future's
    # result: seconds on a loaded machine (2 s lost a finished chunk's items in CI).
    handover_seconds=10.0,
)
