"""``corral.Service``: an external program on a port of its own, ready before it is used, and
never left running.

    worker process (or the caller)       keeper process (_services.keeper)   the service
    ──────────────────────────────       (own session)              (own session = own group)
    start():
      reserve a port (_services.ports: lock file + bind test)
      keeper pipe, write end ──────────► reads "+pgid" / "-pgid"
      Popen(argv with {port}, {token},
            env CORRAL_SERVICE=<mark>) ───────────────────────────► program (and all it starts
      "+pgid" ─────────────────────────►                              inherit the mark)
      reader thread ◄═══ stdout + stderr (one pipe) ═══════════════ output: tail, log, regex
      wait until ready (tcp / regex / callable); else kill it, next port, up to ``retries``
    stop(): SIGTERM to the program's tree, SIGKILL after ``grace``; "-pgid"; close the pipe
            ─► keeper exits
    started in a fixture's set-up: _fixtures.watch(self); the program dies on its own ─►
      _worker.fixture_cache, asking ``_lost()`` before each task and after one raised, fails
      that task (FixtureError, cause ServiceError "... was killed by SIGKILL while in use"),
      tears the fixture down (stop(): port lock, keeper freed) and sets it up again

Ownership: a Service's program, everything it starts, and its keeper belong to the Service.
Its starter stops them (``stop``), or, when the starter dies first, its keeper. Nothing else
kills them: the tree kills of a worker (timeout, cancel, crash, the coordinator's death; see
``_worker.loop``) spare every process that carries ``CORRAL_SERVICE`` and whatever is under it.

Who kills whom:

- ``stop()`` (context exit, fixture teardown) stops the program's whole tree: its group,
  the processes under it in other groups (found by walking the tree), and those that carry
  its mark but are no longer under it (orphans of a double fork, re-parented to the worker,
  a subreaper, or to init).
- The service does not share the worker's process group, so killing a worker (timeout,
  cancel, recycling) or the worker's lifeline watchdog (the coordinator died) does not reach
  it. The keeper does: it blocks reading a pipe whose only write end this process holds.
  When this process dies, however it dies, the kernel closes that end; the keeper reads EOF,
  sends SIGTERM to every group it was told about and to every process carrying the mark, and
  SIGKILL after ``grace``. The keeper runs in a session of its own for the same reason: the
  signal that kills a worker's group must not kill it first.
- The keeper is told "-pgid" after a group is stopped, so it never signals a process group
  id that the system may have reused.

A program that puts itself in the background (daemonizes) is stopped through its mark, as
long as it keeps its environment; still, run servers in the foreground (``redis-server
--daemonize no``): only then does ``ready`` and a death before it is ready make sense.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal

import psutil

from .._errors import ConfigError, ServiceError
from .._fixtures import watch
from .._platform import (
    SERVICE_ENV,
    descendants,
    exiting,
    kill_group,
    kill_marked,
    signal_processes,
)
from .._public import public
from .arguments import (
    check_number,
    check_port,
    check_ready,
    failure_message,
    program_name,
    substitute,
)
from .keeper import Keeper
from .ports import HeldPort, reserve

log = logging.getLogger("corral.services")


def _announce(
    what: str, program: str, port: int | None, pid: int | None, seconds: float | None = None
) -> None:
    """A record of the start or stop, with ``corral_service``: in a worker, the log
    forwarder sends it to the coordinator whatever the levels, where it becomes a
    ``ServiceStarted``/``ServiceStopped`` event (``_worker.forward``, ``_forwarding``).
    ``seconds``: how long the start took, until ready (retries included)."""
    log.info(
        "service %s %s (port %s, pid %s)", program, what, port, pid,
        extra={"corral_service": (what, program, port, pid, seconds)},
    )  # fmt: skip


TAIL_LINES = 50
"""Output lines kept (for ``ServiceError`` and ``Service.output``)."""

POLL = 0.05
"""Seconds between readiness checks of a starting program (a port cannot be waited on)."""

PORT_CONFLICT = re.compile(
    r"in use|EADDRINUSE|Errno 98|(cannot|can't|could not|couldn't|failed to|unable to) bind",
    re.IGNORECASE,
)
"""Output that says the port was taken: another port may well work, however often it repeats."""

MASK = "<token>"
"""What the log and ``ServiceError`` show in place of a start's token."""


class _Failed(Exception):
    """One start attempt failed: the program exited (``code``), or was not ready in time."""

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.code = code


class _Run:
    """One started program: its process, its output tail, and the thread reading it."""

    def __init__(
        self, proc: subprocess.Popen[bytes], pattern: re.Pattern[str] | None, token: str
    ) -> None:
        self.proc = proc
        self.token = token  # masked in the log by the reader thread, even after a discard
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.pattern = pattern
        self.matched = threading.Event()
        self.thread: threading.Thread | None = None
        self.ended = False  # its output reached EOF: the program (or all that shared it) ended


@public
class Service:
    """Start an external program for the duration of a ``with`` block (typically in a fixture).

    ``argv`` may contain ``{port}`` (a free port, reserved against every other corral process
    on the machine) and ``{token}`` (a fresh ``secrets.token_hex(16)`` per start); so may the
    values of ``env``, which are added to this process's environment. ``ready`` says when the
    program can be used: ``"tcp"`` (it accepts connections on its port), a regular expression
    awaited on its output (stdout and stderr), or a callable given this Service and returning
    True once ready (an exception it raises means "not yet"). ``port="auto"`` lets the OS
    choose, an int is the first candidate (the next ones are tried upward), None means the
    program needs no port.

    A start that fails (the program exits early, e.g. address in use, or is not ready within
    ``startup_timeout`` seconds) is retried on another port up to ``retries`` times, then
    raises ``corral.ServiceError`` with the program's last output lines. A program that exits
    with the same code and output on two ports (a usage error, a missing file) fails at once:
    another port will not help (``ServiceError.permanent``), unless that output says the
    address is in use. ``log`` (a path or a writable
    text file) receives all of its output, with the token masked.

    The program runs in its own process group; ``stop()`` (or leaving the ``with`` block)
    sends it SIGTERM, then SIGKILL after ``grace`` seconds. If the process that started it
    dies instead (a worker killed by a timeout, a crash, the coordinator SIGKILLed), a keeper
    process stops it within ``grace`` seconds.

    Attributes once started: ``port``, ``token``, ``host``, ``address`` (``(host, port)``),
    ``pid``.

    Example::

        @corral.fixture
        def omc():
            argv = ["omc", "--interactive=zmq", "--interactivePort={port}", "-z={token}"]
            with corral.Service(argv, ready="tcp", port=10000) as service:
                yield connect(service.port)
    """

    def __init__(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        ready: Literal["tcp"] | str | re.Pattern[str] | Callable[[Service], bool] = "tcp",
        port: Literal["auto"] | int | None = "auto",
        host: str = "127.0.0.1",
        startup_timeout: float = 30.0,
        retries: int = 5,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        log: str | os.PathLike[str] | IO[str] | None = None,
        grace: float = 3.0,
    ) -> None:
        if isinstance(argv, (str, bytes)) or not argv:
            raise ConfigError(f"argv must be a non-empty list of arguments, not {argv!r}")
        self.argv = tuple(os.fspath(a) for a in argv)
        self._ready = check_ready(ready, port)
        self._start_port = check_port(port)
        self._needs_port = port is not None
        if not self._needs_port and any("{port}" in a for a in self.argv):
            raise ConfigError("argv contains {port} but port=None")
        check_number("startup_timeout", startup_timeout)
        check_number("grace", grace, allow_zero=True)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigError(f"retries must be a non-negative integer, not {retries!r}")
        self.host = host
        self.startup_timeout = float(startup_timeout)
        self.retries = retries
        self.grace = float(grace)
        self._env = dict(env) if env is not None else {}
        self._cwd = cwd
        self._log_target = log
        self._log: IO[str] | None = None
        self.port: int | None = None
        self.token: str | None = None
        self.pid: int | None = None
        self._run: _Run | None = None
        self._reservation: HeldPort | None = None
        self._keeper: Keeper | None = None
        self._check_error: Exception | None = None  # the ready callable's last exception
        self._on_end: list[Callable[[], None]] = []  # told when the output ends (_when_ended)

    # -- public surface ---------------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int | None]:
        """``(host, port)``, as ``socket.create_connection`` takes it."""
        return (self.host, self.port)

    @property
    def running(self) -> bool:
        return self._run is not None and self._run.proc.poll() is None

    @property
    def output(self) -> list[str]:
        """The program's last output lines (stdout and stderr together)."""
        return list(self._run.tail) if self._run is not None else []

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}, port {self.port}" if self.running else "not running"
        return f"<corral.Service {self.name!r} ({state})>"

    # -- starting ---------------------------------------------------------------------------
    def start(self) -> Service:
        """Start the program and wait until it is ready; ServiceError after ``retries``."""
        if self._run is not None:
            raise ServiceError(f"{self.name} is already started", argv=self.argv)
        began = time.monotonic()
        try:
            self._open_log()
            title = f"corral service keeper of {self.name} [for pid {os.getpid()}]"
            self._keeper = Keeper(self.grace, secrets.token_hex(8), title)
            failed = self._start_on_some_port()
        except BaseException:
            self.stop()
            raise
        if failed is None:
            _announce("started", self.name, self.port, self.pid, time.monotonic() - began)
            watch(self)  # in a fixture's set-up: the fixture now lives as long as the program
            return self
        self.stop()
        failures, tail, permanent = failed
        message = failure_message(self.name, failures, tail, permanent)
        raise ServiceError(message, argv=self.argv, attempts=tuple(failures),
                           output=tuple(tail), permanent=permanent)  # fmt: skip

    @property
    def name(self) -> str:
        """What messages call the program: the script an interpreter runs (``python
        simserver.py`` is ``simserver.py``), else the program."""
        return program_name(self.argv)

    def _start_on_some_port(self) -> tuple[list[str], list[str], bool] | None:
        """Attempts on successive ports until one is ready (it is then ``self._run``): None,
        or when all failed, why each did, the last one's output lines (token masked), and
        whether the failure is permanent (the same exit and output on two ports in a row)."""
        failures: list[str] = []
        tail: list[str] = []
        avoid: set[int] = set()
        start = self._start_port
        previous: tuple[int, list[str]] | None = None
        for attempt in range(1, self.retries + 2):
            reservation = self._reserve(start, avoid)
            try:
                self._attempt(reservation)
            except _Failed as failure:
                port = reservation.port if reservation is not None else None
                failures.append(f"attempt {attempt} (port {port}): {failure}")
                tail = self._discard(reservation)
                # An output that names the port differs from port to port: such a failure
                # is worth another port, and so is one that says the address is in use;
                # the token never says why (it is masked in ``tail``).
                if (
                    failure.code is not None
                    and previous == (failure.code, tail)
                    and not any(PORT_CONFLICT.search(line) for line in tail)
                ):
                    return failures, tail, True
                previous = (failure.code, tail) if failure.code is not None else None
                if port is not None:
                    avoid.add(port)
                    start = port + 1 if start is not None else None
                continue
            except BaseException:  # the caller stops the program; the port is ours to free
                if reservation is not None:
                    reservation.release()
                raise
            self._reservation = reservation
            return None
        return failures, tail, False

    def _reserve(self, start: int | None, avoid: set[int]) -> HeldPort | None:
        if not self._needs_port:
            return None
        return reserve(self.host, start=start, avoid=frozenset(avoid))

    def _attempt(self, reservation: HeldPort | None) -> None:
        self.port = reservation.port if reservation is not None else None
        self.token = secrets.token_hex(16)
        self._launch()
        self._await_ready()

    def _launch(self) -> None:
        token = str(self.token)
        subst = {"{port}": str(self.port), "{token}": token}
        argv = [substitute(a, subst) for a in self.argv]
        env = {**os.environ, **{k: substitute(v, subst) for k, v in self._env.items()}}
        assert self._keeper is not None
        env[SERVICE_ENV] = self._keeper.mark  # its keeper's, not a worker's (see _services.keeper)
        shown = [substitute(a, {"{port}": str(self.port), "{token}": MASK}) for a in self.argv]
        self._write_log(f"--- corral: starting {' '.join(shown)}")
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own session, so its own process group
                close_fds=True,
                cwd=self._cwd,
                env=env,
            )
        except OSError as exc:  # not found, not executable: another port will not help
            raise ServiceError(
                f"cannot run {argv[0]}: {exc}", argv=self.argv, permanent=True
            ) from exc
        self._tell_keeper(f"+{proc.pid}")
        pattern = self._ready if isinstance(self._ready, re.Pattern) else None
        run = _Run(proc, pattern, token)
        run.thread = threading.Thread(
            target=self._read_output, args=(run,), name=f"corral-service-{proc.pid}", daemon=True
        )
        run.thread.start()
        self._run = run
        self.pid = proc.pid

    def _await_ready(self) -> None:
        run = self._run
        assert run is not None
        self._check_error = None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = run.proc.poll()
            if code is not None:
                raise _Failed(f"exited with code {code} before it was ready", code)
            if self._is_ready(run):
                return
            if time.monotonic() > deadline:
                last = self._check_error
                why = f" (last check: {type(last).__name__}: {last})" if last is not None else ""
                raise _Failed(f"not ready after {self.startup_timeout:g} s{why}")
            if run.pattern is not None:
                run.matched.wait(POLL)
            else:
                time.sleep(POLL)  # polling the program's port or the user's check

    def _is_ready(self, run: _Run) -> bool:
        ready = self._ready
        if isinstance(ready, re.Pattern):
            return run.matched.is_set()
        if callable(ready):
            try:
                return bool(ready(self))
            except Exception as exc:  # "connection refused" while it starts: not ready yet
                self._check_error = exc
                return False
        assert self.port is not None
        return _accepts(self.host, self.port) and _listens(run.proc.pid, self.port)

    def _read_output(self, run: _Run) -> None:
        stream = run.proc.stdout
        assert stream is not None
        with stream:
            for raw in iter(stream.readline, b""):
                line = raw.decode(errors="replace").rstrip("\r\n")
                run.tail.append(line)
                self._write_log(line.replace(run.token, MASK))
                if run.pattern is not None and run.pattern.search(line):
                    run.matched.set()
        run.ended = True
        for fn in list(self._on_end):
            fn()

    # -- dying on its own ---------------------------------------------------------------------
    def _when_ended(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` on the reader thread when the program's output ends (it may have died;
        a child that keeps the output open hides that until a task fails)."""
        self._on_end.append(fn)
        if self._run is not None and self._run.ended:  # ended before: the reader is done
            fn()

    def _lost(self, dying: bool = False) -> ServiceError | None:
        """How the program ended since it was ready, or None (running, or stopped). Asked
        before every task: without ``dying`` only once its output reached EOF (no syscall).
        ``dying``: a task saw its connection drop; also when it has begun to exit (the kernel
        closes a dying process's sockets before it is a zombie), its status awaited."""
        run = self._run
        if run is None or not (dying or run.ended):
            return None
        code = run.proc.poll()
        if code is None:
            if not (dying and exiting(run.proc.pid)):
                return None
            try:
                code = run.proc.wait(self.grace)
            except subprocess.TimeoutExpired:
                return None
        how = f"exited with code {code}"
        if code < 0:
            with contextlib.suppress(ValueError):
                how = f"was killed by {signal.Signals(-code).name}"
        tail = [line.replace(run.token, MASK) for line in run.tail]
        last = next((line.strip() for line in reversed(tail) if line.strip()), "")
        message = f"{self.name} (pid {run.proc.pid}, port {self.port}) {how} while in use"
        return ServiceError(
            f"{message}: {last}" if last and code >= 0 else message,
            argv=self.argv,
            attempts=(f"{how} after it was ready",),
            output=tuple(tail),
        )

    # -- stopping ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the program (SIGTERM to its group, SIGKILL after ``grace``) and the keeper."""
        run, self._run = self._run, None
        if run is not None:
            self._terminate(run)
            _announce("stopped", self.name, self.port, run.proc.pid)
        if self._reservation is not None:
            self._reservation.release()
            self._reservation = None
        self._stop_keeper()
        if self._log is not None and self._log is not self._log_target:
            self._log.close()
        self._log = None

    def _discard(self, reservation: HeldPort | None) -> list[str]:
        """Stop a failed attempt's program and free its port (the next attempt avoids it);
        the program's last output lines, complete once its output pipe is drained."""
        run, self._run = self._run, None
        tail: list[str] = []
        if run is not None:
            self._terminate(run)
            tail = [line.replace(run.token, MASK) for line in run.tail]
        if reservation is not None:
            reservation.release()
        self.port = self.token = self.pid = None
        return tail

    def _terminate(self, run: _Run) -> None:
        """Stop the program's whole tree: its group, and what it started in other sessions
        (found under it now, or by its mark: orphans re-parented elsewhere); SIGTERM, then
        SIGKILL once the program is gone or ``grace`` has passed."""
        group = run.proc.pid
        escaped = [p for p in descendants(group, spare_services=False) if _outside(p, group)]
        spare = (self._keeper.pid,) if self._keeper is not None else ()
        mark = self._keeper.mark if self._keeper is not None else None
        if run.proc.poll() is None:
            kill_group(group, signal.SIGTERM)
        signal_processes(escaped, signal.SIGTERM)
        if mark is not None:
            kill_marked(SERVICE_ENV, mark, signal.SIGTERM, spare=spare)
        if run.proc.poll() is None:
            try:
                run.proc.wait(self.grace)
            except subprocess.TimeoutExpired:
                kill_group(group, signal.SIGKILL)
                run.proc.wait()
        kill_group(group, signal.SIGKILL)  # what the program started, if it outlived it
        signal_processes(escaped, signal.SIGKILL)
        if mark is not None:
            kill_marked(SERVICE_ENV, mark, signal.SIGKILL, spare=spare)
        self._tell_keeper(f"-{group}")
        if run.thread is not None:
            run.thread.join(timeout=5.0)  # EOF once every writer of the pipe is gone

    # -- keeper and log -----------------------------------------------------------------------
    def _tell_keeper(self, line: str) -> None:
        if self._keeper is not None:
            self._keeper.tell(line)

    def _stop_keeper(self) -> None:
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.close()

    def _open_log(self) -> None:
        target = self._log_target
        if target is None:
            self._log = None
        elif isinstance(target, (str, os.PathLike)):
            # closed by stop(): the log outlives this method
            self._log = Path(target).open("a", buffering=1, encoding="utf-8")  # noqa: SIM115
        else:
            self._log = target

    def _write_log(self, line: str) -> None:
        if self._log is not None:
            with contextlib.suppress(ValueError, OSError):
                self._log.write(line + "\n")


def _outside(proc: Any, group: int) -> bool:
    """Whether ``proc`` left the program's process group (a group kill misses it)."""
    try:
        return os.getpgid(proc.pid) != group
    except OSError:
        return False  # gone


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _listens(pid: int, port: int) -> bool:
    """Whether the program (or a process it started) listens on ``port``: a connection that
    succeeds may reach a foreign program that took the port first."""
    try:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                    return True
    except psutil.AccessDenied:
        return True  # cannot tell: trust the connection
    except psutil.NoSuchProcess:
        return False
    return False
