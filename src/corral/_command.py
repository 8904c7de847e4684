"""External programs as tasks (``corral exec``): one program per input, supervised.

``run_command`` is the task function; it runs in a worker (or, with the serial backend, in
the caller) and imports only the standard library and corral's shared vocabulary, plus the
port registry when ``{port}`` is asked for::

    worker process (its own group; SIGINT ignored)
      run_command(template, input, job)
        ├─ {}-strings replaced (GNU parallel's), shell-quoted
        ├─ sh -c COMMAND   in a session and process group of its own, output to temp files
        │    └─ what it starts (same group, or re-parented to the worker: a subreaper)
        └─ exit 0 → CommandResult;  non-zero or a signal → CommandFailed

Supervision is corral's: a timeout or a cancel kills the worker's tree (SIGTERM to what left
its group, the program's group included, SIGKILL after ``kill_grace``; docs/failures.md, "What
a task starts"), the program's grandchildren too. With the serial backend the timeout arrives
as an exception in the caller (SIGALRM), and Ctrl-C as KeyboardInterrupt: either way the
program's whole process group is killed before the task ends, and what it started in other
sessions, found by the mark in its environment (``COMMAND_ENV``). A program that ends on its
own ends its task; what it left running in the background is its business, as for any task.

``{%}`` (the worker's slot, 1..N) is a lock file held by each worker for its life, the first
free one of the run's; ``{port}`` a port reserved by that worker (``corral.free_port``) and
``{token}`` a random token, both made once per worker and kept for its life.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shlex
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import TaskError
from ._platform import kill_marked
from ._public import public

COMMAND_ENV = "CORRAL_COMMAND"
"""Set, to a mark of its own, in each program's environment: what it starts carries it."""

TAIL_LINES = 20
"""How many last lines of a failed program's stderr its CommandFailed says."""


@public
class CommandFailed(TaskError):
    """An external program (``corral exec``) exited with a non-zero status or was killed.

    ``command`` is what ran, ``exit_code`` its exit status (None if a signal killed it),
    ``signal`` the signal's name (``"SIGSEGV"``) or None, ``stderr_tail`` its last lines of
    standard error, ``stdout`` and ``stderr`` all of its output.
    """

    def __init__(
        self,
        key: Any,
        command: str,
        *,
        exit_code: int | None,
        signal: str | None,
        stdout: str = "",
        stderr: str = "",
    ) -> None:
        self.command = command
        self.exit_code = exit_code
        self.signal = signal
        self.stdout = stdout
        self.stderr = stderr
        self.stderr_tail = "\n".join(stderr.splitlines()[-TAIL_LINES:])
        how = f"was killed by {signal}" if signal else f"exited with status {exit_code}"
        lines = self.stderr_tail.splitlines()
        tail = "\n  last lines of stderr:\n    " + "\n    ".join(lines) if lines else ""
        super().__init__(f"command {command!r} {how}{tail}", key=key)


@dataclass(frozen=True)
class CommandResult:
    """What a program that succeeded gave: its command, exit status 0, output, duration."""

    command: str
    exit_code: int
    stdout: str
    stderr: str
    seconds: float


# -- replacement strings ------------------------------------------------------------------------

_STRINGS = ("{//}", "{/.}", "{/}", "{.}", "{#}", "{%}", "{port}", "{token}", "{}")


def has_placeholder(template: str) -> bool:
    return any(s in template for s in _STRINGS)


def expand(template: str, value: str, job: int, slot: int | str, quote: bool = True) -> str:
    """``template`` with GNU parallel's replacement strings for input ``value``: ``{}`` the
    input, ``{.}`` without its extension, ``{/}`` its base name, ``{//}`` its directory,
    ``{/.}`` the base name without extension, ``{#}`` the job number (1-based), ``{%}`` the
    worker slot; ``{port}`` and ``{token}`` the worker's own (made on first use). Values are
    shell-quoted when ``quote``."""
    path = value
    base = os.path.basename(path)
    parts: dict[str, Any] = {
        "{}": path,
        "{.}": _strip_ext(path),
        "{/}": base,
        "{//}": os.path.dirname(path) or ".",
        "{/.}": _strip_ext(base),
        "{#}": str(job),
        "{%}": str(slot),
    }
    out = []
    i = 0
    while i < len(template):
        for s in _STRINGS:
            if template.startswith(s, i):
                if s == "{port}":
                    text = str(_worker_port())
                elif s == "{token}":
                    text = _worker_token()
                else:
                    text = parts[s]
                out.append(
                    shlex.quote(text)
                    if quote and s in ("{}", "{.}", "{/}", "{//}", "{/.}")
                    else text
                )
                i += len(s)
                break
        else:
            out.append(template[i])
            i += 1
    return "".join(out)


def _strip_ext(path: str) -> str:
    head, tail = os.path.split(path)
    stem, dot, _ = tail.rpartition(".")
    return os.path.join(head, stem) if dot and stem else path


_worker_state: dict[str, Any] = {}
"""This process's slot lock, port and token, made on first use, kept for its life."""


def _worker_port() -> int:
    if "port" not in _worker_state:
        from ._services.ports import free_port

        _worker_state["port"] = free_port()
    port: int = _worker_state["port"]
    return port


def _worker_token() -> str:
    if "token" not in _worker_state:
        _worker_state["token"] = secrets.token_hex(16)
    token: str = _worker_state["token"]
    return token


def slots_dir(run: str) -> Path:
    """The lock files of run ``run``'s slots; the command line removes it after the run."""
    return Path(tempfile.gettempdir()) / f"corral-{os.getuid()}" / "slots" / run


def worker_slot(run: str, limit: int) -> int:
    """This process's slot in run ``run``: 1..limit, the first whose lock file it could take
    (held until the process exits, so two live workers never share one)."""
    if _worker_state.get("slot_run") == run:
        slot: int = _worker_state["slot"]
        return slot
    directory = slots_dir(run)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for slot in range(1, limit + 1):
        fd = os.open(directory / f"{slot}", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        _worker_state.update(slot_run=run, slot=slot, slot_fd=fd)
        return slot
    return limit + 1  # more processes than slots (a replaced worker's lock not yet dropped)


# -- the task ----------------------------------------------------------------------------------


def run_command(
    template: str,
    value: str,
    *,
    job: int,
    run: str,
    slots: int,
    workdir: str | None = None,
    key: Any = None,
) -> CommandResult:
    """Run ``template`` for input ``value`` under ``sh -c``; raise CommandFailed unless it
    exits with status 0. The program has a process group of its own, killed whole if this
    task is interrupted (serial timeout, Ctrl-C)."""
    slot = worker_slot(run, slots)
    command = expand(template, value, job, slot)
    cwd = None
    if workdir is not None:
        cwd = expand(workdir, value, job, slot, quote=False)
        os.makedirs(cwd, exist_ok=True)
    start = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        mark = secrets.token_hex(8)
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=cwd,
            start_new_session=True,
            env={**os.environ, COMMAND_ENV: mark},
        )
        try:
            code = proc.wait()
        except BaseException:
            # interrupted in this process (serial timeout, Ctrl-C): the program's group and
            # whatever it started elsewhere (found by the mark) go with the task
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            kill_marked(COMMAND_ENV, mark, signal.SIGKILL)
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
            raise
        stdout, stderr = _read(out), _read(err)
    if code != 0:
        name = _signal_name(-code) if code < 0 else None
        raise CommandFailed(
            key if key is not None else value,
            command,
            exit_code=None if code < 0 else code,
            signal=name,
            stdout=stdout,
            stderr=stderr,
        )
    return CommandResult(command, 0, stdout, stderr, time.monotonic() - start)


def _read(f: Any) -> str:
    f.seek(0)
    data: bytes = f.read()
    return data.decode("utf-8", errors="replace")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
