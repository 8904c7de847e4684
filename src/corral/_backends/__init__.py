"""Backends run Calls; the engine decides everything else. This is their contract.

A backend starts, feeds, watches and kills workers. The engine (``_engine``) owns every
decision: what runs where, retries, timeouts, cancels, recycling. Three are built in:
``process`` (worker processes, ``_backends.process``), ``serial`` (this process,
``_backends.serial``) and ``dask`` (corral worker processes under the workers of a Dask
cluster, ``_backends.dask`` and, on the Dask workers, ``_backends.dask_remote``); ``BACKENDS``
maps each name (``Pool(backend=...)``) to its ``BackendFactory``, and ``register`` adds one.

Which thread calls it. Only the engine thread calls a backend, except ``running_item``, which
the progress renderer also calls (it must read only, and never block). A backend whose
``capabilities.runs_in_caller_thread`` is set has no engine thread: the caller's own thread
drives the engine (``_drivers.SerialDriver``) and the Calls run inside ``wait``.

What a backend must do, method by method:

    start_worker(slot)    start (or restart) the worker of ``slot``; its pid (None: none).
                          Raising means workers cannot be started (the Pool may fall back).
    prepare(slot, call)   turn a Call into what ``send`` ships to that slot's worker: the
                          backend decides the bytes (function bytes the worker lacks, those it
                          may drop: ``fns``/``drop``). A Prepared names the items that could
                          not be encoded (``rejected``: offset → error); they are not sent.
    send(slot, prepared)  hand the prepared Call to the worker. Called after the engine has
                          recorded the Call as in flight (so a death is always attributed).
    forget(fn_id)         the function table forgot ``fn_id``: workers holding it may drop it.
    wait(timeout)         block until something happens or ``timeout`` (None: forever);
                          return the events, in the order they happened per slot.
    running_item(slot)    ``(call_id, index, monotonic start)`` of the running item (index
                          -1: none, or unknown without ``has_running_stamp``).
    kill(slot)            stop the slot's worker now (it and what it started); the slot is
                          free at once, the worker is reaped later. No ``Died`` follows.
    hand_over(slot)       Ctrl-C: ask for the finished part of the running Call. A Handover
                          returned now (in-process), or None and a Handover arrives later
                          as a ``Message`` (or never: the engine waits a bounded time).
    dump_stack(slot)      every thread's Python stack in the slot's live worker (asked
                          before a timed-out worker is killed; a short bounded wait), or None.
    remains(slot)         what the slot's worker left (alive, or dead and not yet replaced):
                          a fatal signal's traceback, the running task's output so far.
    retire(slot)          ask the slot's worker to exit after its current work (recycling).
    close(timeout)        stop every worker; return when none is left.

Events ``wait`` returns (frozen dataclasses below)::

    Message(slot, message)   the slot's worker sent ``message`` (decoded): Ready, Result,
                             CallFailed, Logged, InitFailed or Handover (``_messages``)
    Undecodable(slot, error) the slot's worker sent bytes that do not unpickle (a result
                             whose own ``__setstate__`` raises): its running Call is lost
    Died(slot, exitcode, call_id, index, begun)
                             the slot's worker is gone on its own (exitcode < 0: signal;
                             None: unknown); it was running item ``index`` of Call ``call_id``
                             (index -1: in no item); ``begun`` items of that Call had begun
                             (-1: unknown). What it sent before dying comes first.

Capabilities (``Capabilities``), named for what the engine asks:

    can_kill_one_call     the engine can stop one running Call by killing its worker: it
                          enforces timeouts (arming deadlines), kills on cancel and recycles
                          workers. False: the backend times items out inside the Call (a
                          TaskTimeout in a Result is that item's timeout).
    can_queue_calls       a second Call may be sent to a busy worker (prefetch).
    shares_memory_with_coordinator
                          Calls and results travel as objects, never pickled (functions are
                          known by identity: ``FunctionTable(pickle=False)``); the worker is
                          the calling process (an Outcome's ``worker`` is -1).
    has_running_stamp     ``running_item`` says which item of a Call runs, and since when.
    runs_in_caller_thread Calls run inside ``wait`` on the thread that calls it: there is no
                          engine thread; the caller drives the engine.
    call_floor_seconds    the shortest worthwhile Call (a round trip's worth of task time):
                          automatic chunks of short tasks are made at least this long.
    handover_seconds      how long a worker asked for its finished items (Ctrl-C) may take
                          to answer before the engine stops it without them.
"""

from __future__ import annotations

from .._errors import ConfigError
from .contract import (
    DASK,
    PROCESS,
    SERIAL,
    Backend,
    BackendFactory,
    BackendSetup,
    Capabilities,
    Died,
    Event,
    Message,
    Prepared,
    Remains,
    Undecodable,
)

__all__ = [
    "BACKENDS",
    "DASK",
    "PROCESS",
    "SERIAL",
    "Backend",
    "BackendFactory",
    "BackendSetup",
    "Capabilities",
    "Died",
    "Event",
    "Message",
    "Prepared",
    "Remains",
    "Undecodable",
    "lookup",
    "register",
]


def _process(setup: BackendSetup) -> Backend:
    from .process import create

    return create(setup)


def _serial(setup: BackendSetup) -> Backend:
    from .serial import create

    return create(setup)


def _dask(setup: BackendSetup) -> Backend:
    from .dask import create

    return create(setup)


BACKENDS: dict[str, BackendFactory] = {
    "process": BackendFactory(_process, PROCESS),
    "serial": BackendFactory(_serial, SERIAL),
    "dask": BackendFactory(_dask, DASK),
}
"""Every backend by the name ``Pool(backend=...)`` takes."""


def register(name: str, factory: BackendFactory) -> None:
    """Make ``backend=name`` use ``factory`` (replacing one of that name)."""
    BACKENDS[name] = factory


def lookup(name: str) -> BackendFactory:
    """The factory of backend ``name``; a ConfigError naming the registered ones if none."""
    factory = BACKENDS.get(name) if isinstance(name, str) else None
    if factory is None:
        known = ", ".join(repr(n) for n in BACKENDS)
        raise ConfigError(f"backend must be one of {known}, not {name!r}")
    return factory
