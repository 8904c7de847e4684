"""The worker process: receive a Call, run it, send the Result back, until told to stop.

    coordinator process                          worker process k (this module)
    ───────────────────                          ──────────────────────────────
    conn (duplex pipe)  ══ Call / STOP ════════► main thread: recv → unpickle → execute
                        ◄═ Ready (once) ══════════ (started up: initializer, fixtures)
                        ◄═ Result / CallFailed ═══ → pickle → send
                        ◄═ Logged ════════════════ a task's log record (_worker.forward)
                        ◄═ InitFailed (once) ═════
    stack file          ◄─ faulthandler ────────── a fatal signal's traceback; every
                                                 thread's stack on SIGUSR2 (_worker.observe)
    stdout/stderr files ◄─ fds 1, 2 ────────────── capture_output: the running item's output
    lifeline writer     ── (never written) ────► watchdog process (forked by the worker):
                                                 blocks on read; EOF = coordinator gone →
                                                 SIGKILL the worker's descendants (Services
                                                 spared), then its whole group
    stamp (4 shared doubles) ◄────────────────── main thread writes [item index or phase,
                                                 start time, call id, items begun] as it
                                                 works through a Call
    SIGUSR1 (Ctrl-C: hand over) ───────────────► handler sends a Handover on conn: the
                                                 finished items of the running Call (handover)

    what a task starts, and who kills it:

    worker (subreaper, CORRAL_WORKER=<mark>)
     ├── watchdog                                   (never killed by the tree kills)
     ├── subprocess, same group                     group kill (SIGTERM, then SIGKILL)
     ├── grandchild in a new session / a daemon     tree walk while the worker lives:
     │     (orphans come back to the worker)          timeout, cancel (coordinator), the
     │                                                coordinator's death (watchdog);
     │                                                after a crash: found by its mark
     └── Service program, keeper (CORRAL_SERVICE)   spared: its starter's stop() or its keeper

The worker leads its own process group, so the coordinator can kill it together with any
subprocess a task started, and a terminal's Ctrl-C (sent to the foreground group) reaches only
the coordinator, which decides what stops. SIGINT is ignored here for the same reason.

Orphan protection: the coordinator holds the only write end of the lifeline pipe. When the
coordinator dies for any reason (even SIGKILL), the kernel closes it, the watchdog's read
returns EOF, and it kills the worker's descendants and whole group. The parent-death signal of
Linux would not do: under forkserver the worker's parent is the fork server, not the
coordinator.

Descendants (``_platform``): the worker is a child subreaper, so what its tasks start stays
in its tree even when it leaves the group (a new session) and its parent dies (a daemon's
double fork); and it marks its environment, which finds them once its tree is gone (a crash).
Ownership: the coordinator kills what a killed or crashed worker's tasks started
(``_backends.process``); the watchdog, what they started when the coordinator is gone; a
Service's processes belong to the Service (its ``stop`` or its keeper), never to those kills.
A subreaper must reap the orphans it adopts: between Calls the worker reaps the zombie children
it certainly did not start (``_platform.reap_adopted``), never one a task may still wait for.

Fixtures: a pool with fixtures sends them pickled at start-up; the worker binds each
task function to the fixtures it asks for and, when its loop ends normally (STOP: retired or
pool closed; EOF), tears them down. A killed worker tears nothing down: a ``corral.Service``
started by a fixture runs in a process group of its own, which the watchdog's group kill does
not reach; the Service's own keeper process stops it when this process dies (``_services.service``).

The stamp lets the coordinator tell, without a message per item, which item of a chunk was
running when the worker died or overran its timeout, or at which edge of the Call it was:
unpickling its arguments, unpickling its function, pickling or sending its Result (the
phases of ``_messages``; a Call's id travels ahead of its pickle, so even a death while
unpickling it names it). An exception at an edge (anything, ``SystemExit`` included) does not
end the worker: it answers with a ``CallFailed`` naming the edge and goes on to the next Call.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import pickle
import signal
import sys
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from .. import _codec
from .._errors import ExceptionWithTraceback
from .._messages import (
    ARGUMENTS,
    BETWEEN,
    CALL,
    FUNCTION,
    LOADING_ARGS,
    LOADING_FUNCTION,
    RESULT,
    SENDING,
    STOP,
    TEARDOWN,
    Call,
    CallFailed,
    InitFailed,
    Observe,
    Ready,
    Result,
)
from .._platform import (
    WORKER_ENV,
    become_group_leader,
    become_subreaper,
    kill_descendants,
    kill_group,
    limit_native_threads,
    reap_adopted,
    set_parent_death_signal,
    worker_mark,
)
from .._proctitle import set_title
from . import forward
from .execute import ItemWatch, execute
from .handover import Responder
from .handover import install as install_handover
from .meter import Meter
from .observe import Capture, CapturingWatch, keep_stacks

if TYPE_CHECKING:
    from .fixture_cache import FixtureCache


class Stamp:
    """Writes ``[index, monotonic start, call id, items begun]`` of the running item into
    shared memory (``_messages.STAMP_SIZE``). The count of items begun outlives the item: a
    death between two items (index ``BETWEEN``) still tells which items ran."""

    def __init__(self, shared: Any) -> None:
        self._shared = memoryview(shared).cast("B").cast("d")

    @property
    def shared(self) -> Any:
        """The doubles themselves (read by the log forwarder: which item logs)."""
        return self._shared

    def start(self, call_id: int) -> None:
        self._shared[0] = BETWEEN
        self._shared[3] = 0
        self._shared[2] = call_id

    def phase(self, call_id: int, phase: int) -> None:
        """Entering an edge of the Call (``_messages``: ``LOADING_ARGS``, ..., ``SENDING``)."""
        self._shared[0] = phase
        self._shared[2] = call_id

    def between(self) -> None:
        """The Call is answered: a death from now on is not its fault."""
        self._shared[0] = BETWEEN

    def begin(self, index: int) -> None:
        self._shared[1] = time.monotonic()
        self._shared[3] = index + 1
        self._shared[0] = index

    def end(self) -> None:
        self._shared[0] = BETWEEN

    def restart(self) -> None:
        """The running item starts its clock again: its worker fixtures were just set up, and
        their set-up is not the task's time (a hung set-up still times out)."""
        if self._shared[0] >= 0:
            self._shared[1] = time.monotonic()

    def index_buffer(self) -> Any:
        self._shared[1] = time.monotonic()  # the chunk's start, for progress displays
        return self._shared


def _adopt_environment(environ: dict[str, str]) -> None:
    """Make this process's environment ``environ``, changing only what differs (usually
    nothing: clearing and refilling ``os.environ`` costs a putenv per variable)."""
    current = dict(os.environ)
    if current == environ:
        return
    for name in current.keys() - environ.keys():
        del os.environ[name]
    for name, value in environ.items():
        if current.get(name) != value:
            os.environ[name] = value


def main(
    conn: Connection,
    lifeline: Connection,
    stamp: Any,
    threads: int,
    initializer: bytes | None,
    measure_rss: bool = False,
    close_fds: list[int] | tuple[int, ...] = (),
    fixtures: bytes | None = None,
    title: str = "corral worker",
    telemetry: bool = True,
    observe: Observe | None = None,
    environ: dict[str, str] | None = None,
) -> None:
    """Entry point of a worker process (the target given to ``multiprocessing``).

    ``fixtures``: the pool's pickled fixtures, set up here on first need and torn down when
    the loop ends (STOP or EOF); see ``_worker.fixture_cache``. ``title``: the process title.
    ``telemetry``: measure each Call's CPU and peak memory (``_worker.meter``).
    ``observe``: the files faulthandler and captured output go to, and the log levels of
    forwarded records (``_worker.observe``, ``_worker.forward``); None: faulthandler to stderr.
    ``environ``: the coordinator's environment as the pool started this worker, for a worker
    forked by the fork server (whose own is that of when it started); None: inherited.

    Once started up, the worker says so (``Ready``), then takes Calls.

    Whatever stops the worker before its first Call (the initializer, the fixtures that do
    not unpickle, anything else) is sent back as ``InitFailed`` with its traceback, so the
    coordinator's ``WorkerStartError`` says why; so is an exception that ends the loop.
    """
    began = time.time()
    if environ is not None:
        _adopt_environment(environ)
    set_title(title)
    for fd in close_fds:  # the coordinator's pipe ends, inherited under fork
        with contextlib.suppress(OSError):
            os.close(fd)
    become_group_leader()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A worker forked while the coordinator waited for a batch inherits its handlers of
    # SIGTERM/SIGHUP/SIGUSR1 (``_signals``, ``_draining``): a worker dies of SIGTERM, as the
    # kills (timeout, cancel) expect; SIGUSR1 waits for the hand-over's handler (``handover``).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    stacks = keep_stacks(observe.stack_path) if observe and observe.stack_path else None
    if stacks is None:
        faulthandler.enable()
    _watch_lifeline(lifeline, title)
    watch = Stamp(stamp)
    forwarder = forward.install(conn, watch.shared, observe.log_levels) if observe else None
    stage = "start-up"
    try:
        limit_native_threads(threads)
        if initializer is not None:
            stage = "initializer"
            fn, args = _codec.loads(initializer)
            fn(*args)
            stage = "start-up"
        cache = _fixture_cache(fixtures)
        capture = None
        if observe is not None and observe.stdout_path and observe.stderr_path:
            capture = Capture(observe.stdout_path, observe.stderr_path, observe.output_limit)
        conn.send_bytes(pickle.dumps(Ready(os.getpid(), began), _codec.PROTOCOL))
    except BaseException as exc:
        _report_start_failure(conn, exc, stage)
        return
    try:
        if cache is not None:
            cache.on_set_up = watch.restart
            cache.on_teardown = lambda name: _announce_teardown(conn, name)
        meter = Meter() if telemetry else None
        bind = cache.bind if cache is not None else _unbound
        _loop(conn, watch, measure_rss, bind, meter, forwarder, capture)
    except BaseException as exc:  # the coordinator learns why, then the worker dies of it
        _report_start_failure(conn, exc, "loop")
        raise
    finally:
        if cache is not None:  # retired or closed: tear the worker's fixtures down
            cache.close()


def _loop(
    conn: Connection,
    watch: Stamp,
    measure_rss: bool,
    bind: Callable[[Callable[..., Any]], Callable[..., Any]],
    meter: Meter | None = None,
    forwarder: forward.Forwarder | None = None,
    capture: Capture | None = None,
) -> None:
    functions: dict[int, Callable[..., Any]] = {}
    handover = install_handover(conn)  # Ctrl-C: the finished part of a chunk (_worker.handover)
    if forwarder is not None:
        forwarder.writer = handover
    while True:
        handover.idle()
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            handover.busy()  # fixture teardown may write to conn next
            return
        handover.busy()
        if data == STOP:
            return
        answer = _answer(data, functions, watch, measure_rss, bind, handover, meter, capture)
        del data
        if forwarder is not None:  # what the task's other threads logged comes before
            forwarder.flush_pending()
        try:
            conn.send_bytes(answer)
        except OSError:  # the coordinator is gone; the watchdog is killing this group
            return
        watch.between()
        del answer
        reap_adopted()  # between Calls: no task code is waiting for a child now


def _answer(
    data: bytes,
    functions: dict[int, Callable[..., Any]],
    watch: Stamp,
    measure_rss: bool,
    bind: Callable[[Callable[..., Any]], Callable[..., Any]],
    handover: Responder,
    meter: Meter | None = None,
    capture: Capture | None = None,
) -> bytes:
    """The bytes that answer one Call: its Result, or a CallFailed naming the edge of the
    Call that raised. Nothing raised here ends the worker (``SystemExit`` from an argument's
    ``__setstate__`` included); a death on the way is told by the stamp's phase."""
    call_id = _codec.call_id_of(data)
    watch.phase(call_id, LOADING_ARGS)
    try:
        call: Call = _codec.loads_call(data)
    except BaseException as exc:
        return _failed(call_id, ARGUMENTS, exc)
    for fn_id in call.drop:
        functions.pop(fn_id, None)
    watch.phase(call_id, LOADING_FUNCTION)
    try:  # all of the Call's functions or none, so the coordinator knows what this worker has
        loaded = {fn_id: bind(_codec.loads(blob)) for fn_id, blob in call.fns.items()}
    except BaseException as exc:
        return _failed(call_id, FUNCTION, exc)
    functions.update(loaded)
    del loaded
    items: ItemWatch = watch if capture is None else CapturingWatch(watch, capture)
    try:
        result = execute(
            call,
            functions.__getitem__,
            items,
            measure_rss=measure_rss,
            live=handover,
            meter=meter,
        )
    except BaseException as exc:  # a bug in corral: the tasks themselves catch everything
        return _failed(call_id, CALL, exc)
    if capture is not None:
        result.output = capture.take()
    del call
    watch.phase(call_id, SENDING)
    try:
        return encode_result(result)
    except BaseException as exc:
        return _failed(call_id, RESULT, exc)


def _failed(call_id: int, edge: str, exc: BaseException) -> bytes:
    """A CallFailed message; plain text, so it always pickles."""
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return pickle.dumps(CallFailed(call_id, edge, text, tb), _codec.PROTOCOL)


def _announce_teardown(conn: Connection, name: str) -> None:
    with contextlib.suppress(OSError):  # the coordinator is gone: nobody to tell
        conn.send_bytes(TEARDOWN + name.encode())


def _unbound(fn: Callable[..., Any]) -> Callable[..., Any]:
    return fn


def _fixture_cache(fixtures: bytes | None) -> FixtureCache | None:
    if fixtures is None:
        return None
    from .fixture_cache import from_bytes  # only workers of pools with fixtures pay for it

    return from_bytes(fixtures)


def _watch_lifeline(lifeline: Connection, title: str = "corral worker") -> None:
    """Make this worker the keeper of its descendants, then fork the watchdog: a tiny process
    in the worker's group that blocks on the lifeline and, when it reports EOF, kills every
    descendant of the worker (Services excepted) and the worker's group.

    A thread would not do: it needs the GIL to act, and a task stuck in C code that holds the
    GIL would keep the worker alive after its coordinator is gone. The watchdog dies with the
    worker (parent-death signal on Linux) and is killed with its group otherwise.
    """
    worker = os.getpid()
    become_subreaper()  # orphans of a task's processes stay in this tree (Linux)
    os.environ[WORKER_ENV] = worker_mark(worker)  # and carry this mark, for after a crash
    fd = lifeline.fileno()
    if os.fork() == 0:  # the watchdog; single-threaded, runs no user code
        try:
            set_parent_death_signal(signal.SIGKILL)
            if os.getppid() != worker:  # the worker died before the signal was armed
                os._exit(0)
            pool = title[title.find(" [") :] if " [" in title else ""  # " [pool 4711]"
            set_title(f"corral watchdog of worker {worker}{pool}")
            while True:
                try:
                    if not os.read(fd, 1):
                        break
                except InterruptedError:
                    continue
                except OSError:
                    break
            _kill_descendants_of(worker)
            # The worker leads the group (it called become_group_leader before forking us);
            # if it could not, kill it alone rather than whatever group it shares.
            if os.getpgid(0) == worker:
                kill_group(worker, signal.SIGKILL)
            else:
                os.kill(worker, signal.SIGKILL)
        finally:
            os._exit(0)
    lifeline.close()


def _report_start_failure(conn: Connection, exc: BaseException, stage: str) -> None:
    """Send why this worker stops (``InitFailed``), if the pipe still takes it."""
    with contextlib.suppress(Exception):
        conn.send_bytes(_codec.dumps(InitFailed(_picklable_error(exc), stage)))


def _kill_descendants_of(worker: int) -> None:
    """In the watchdog: kill what the worker's tasks started, in any session, before the
    worker. The worker is kept alive meanwhile: as a subreaper it adopts the orphans of each
    process killed, and the next walk finds them (and what it started since).

    Not SIGSTOP it first: once the coordinator (under fork or spawn, its parent) is gone, the
    worker's group is orphaned, and the kernel sends SIGHUP and SIGCONT to an orphaned group
    with a stopped member, which kills the worker (and the watchdog) half-way."""
    try:
        kill_descendants(worker, spare={os.getpid()})
    except Exception as exc:  # the group kill that follows must happen regardless
        with contextlib.suppress(OSError):
            os.write(2, f"corral watchdog: cannot walk worker {worker}'s tree: {exc!r}\n".encode())


def encode_result(result: Result) -> bytes:
    """Pickle a Result; values, effects or exceptions that do not pickle fail only their own
    item."""
    if result.errors:
        for i, wrapped in result.errors.items():
            result.errors[i] = _picklable_error(wrapped.exc, wrapped)
    # A value's __reduce__ may raise anything (SystemExit too): it fails that item only.
    try:  # plain pickle is 3x faster; cloudpickle for values that need it (lambdas, ...)
        return pickle.dumps(result, _codec.PROTOCOL)
    except BaseException:
        pass
    try:
        return _codec.dumps(result)
    except BaseException:
        pass
    errors = result.errors or {}
    for i, value in enumerate(result.values):
        if i in errors:
            continue
        bad = _codec.unpicklable([value], "the result ")
        if bad:
            result.values[i] = None
            errors[i] = ExceptionWithTraceback(bad[0])
            errors[i].tb = f"{bad[0]} (the task's return value)\n"
    effects = result.effects or {}
    for i in [i for i in effects if i not in errors]:
        unpicklable = _codec.unpicklable(list(effects[i]), "an effect recorded by the task, ")
        if unpicklable:  # the task fails: its effects would be lost, silently
            del effects[i]
            first = next(iter(unpicklable.values()))
            result.values[i] = None
            errors[i] = ExceptionWithTraceback(first)
            errors[i].tb = f"{first} (corral.record)\n"
    result.effects = effects or None
    result.errors = errors
    return _codec.dumps(result)


def _picklable_error(
    exc: BaseException, wrapped: ExceptionWithTraceback | None = None
) -> ExceptionWithTraceback:
    return _codec.portable(wrapped or ExceptionWithTraceback(exc))


if __name__ == "__main__":  # pragma: no cover
    sys.exit("corral._worker.loop is started by corral, not run directly")
