"""Every public exception of corral, and how remote exceptions travel.

The hierarchy::

    CorralError
     ├── ConfigError (also ValueError)        bad options or tasks, raised before work starts
     │    └── NotCallableError (also TypeError)  a function argument that is not callable
     ├── SerializationError (also TypeError)  a function, argument or result that won't pickle
     ├── TaskError                            why a task failed when it did not raise itself
     │    ├── TaskTimeout (also TimeoutError) past its timeout; its worker was killed
     │    ├── WorkerCrashed                   the worker died while running the task
     │    ├── WorkerStartError                a worker could not be started (initializer failed)
     │    ├── TaskCancelled                   the run was interrupted before the task finished
     │    ├── TaskSkipped                     a task it depends on (after=) did not succeed
     │    └── FixtureError                    a fixture the task needs could not be set up, or
     │                                        its Service died while the task ran
     ├── ServiceError                         an external program (corral.Service) did not start
     │                                        (or died: a FixtureError's cause)
     ├── RemoteError                          a worker exception that could not travel as itself
     ├── JournalError                         a journal file that cannot be used (names the file)
     │    └── JournalLocked                   another run is writing it (names its pid)
     ├── BatchError                           raised after a batch in which some task failed
     └── EffectError                          on_effect raised: the run was stopped

An exception raised by user code in a worker reaches the caller as itself (same type, same
args) with the worker's formatted traceback attached as ``__cause__`` (a ``RemoteTraceback``),
the way ``concurrent.futures`` does it. Each task gets its own exception object: one instance is
never shared between two failures (cpython#101267 shows why: tracebacks pile up).
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._public import public
from ._reasons import batch_message, first_cause

if TYPE_CHECKING:
    from ._report.report import Report


@public
class CorralError(Exception):
    """Base class of every error corral raises itself."""


@public
class ConfigError(CorralError, ValueError):
    """Invalid options or tasks; raised at the boundary, before any work starts."""


class NotCallableError(ConfigError, TypeError):
    """A function argument (``fn``, ``initializer``) that is not callable: a ``ConfigError``,
    as every bad input is, and a ``TypeError``, as Python's own ``map(1, xs)`` raises. Not a
    public name: catch it as either."""


def check_callable(value: Any, what: str) -> None:
    if not callable(value):
        raise NotCallableError(f"{what} must be callable, not {value!r}")


@public
class SerializationError(CorralError, TypeError):
    """A function, argument or result could not be pickled (cloudpickle) or unpickled."""


@public
class TaskError(CorralError):
    """A task failed for a reason other than an exception raised by the task itself."""

    def __init__(self, message: str, *, key: Any = None) -> None:
        super().__init__(message)
        self.key = key

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_task_error, (type(self), self.args, self.__dict__))


def _rebuild_task_error(cls: type[TaskError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


@public
class TaskTimeout(TaskError, TimeoutError):
    """The task ran longer than its timeout; its worker's process group was killed."""

    def __init__(
        self,
        key: Any,
        timeout: float,
        *,
        pid: int | None = None,
        stack: str | None = None,
        basis: str | None = None,
    ) -> None:
        where = f" in worker pid {pid}" if pid else ""
        how = f" ({basis})" if basis else ""
        message = f"task {key!r} timed out after {timeout:g} s{how}{where}"
        super().__init__(message + stack_tail(stack, "it was"), key=key)
        self.timeout = timeout
        self.pid = pid
        self.basis = basis  # how a relative timeout (timeout="3x") was derived, else None
        self.stack = stack
        """Every thread's Python stack in the worker just before it was killed (faulthandler's
        text, most recent call first), or None when the worker did not answer in time."""


@public
class WorkerCrashed(TaskError):
    """The worker process died while it ran the task.

    ``exitcode`` is the process's exit status (negative for a signal, as in
    ``multiprocessing``), ``signal`` the signal's name (``"SIGKILL"``) or None. ``during``
    says when the worker died if not inside the task itself (``"while unpickling the task's
    arguments"``, ``"while pickling or sending the task's result"``), else None.
    """

    def __init__(
        self,
        key: Any,
        *,
        pid: int | None,
        exitcode: int | None,
        during: str | None = None,
        stack: str | None = None,
        cause: str | None = None,
    ) -> None:
        self.pid = pid
        self.exitcode = exitcode
        self.signal = _signal_name(exitcode)
        self.during = during
        self.stack = stack
        """faulthandler's traceback of the fatal signal (SIGSEGV, SIGABRT, ...), or None."""
        self.cause = cause  # what is known of why it died ("out of memory: ..."), else None
        message = f"task {key!r}: {describe_exit(pid, exitcode, during, cause)}"
        super().__init__(message + stack_tail(stack, "it died"), key=key)


@public
class WorkerStartError(TaskError):
    """Workers could not be started (for example, the initializer raised)."""


@public
class TaskCancelled(TaskError):
    """The task did not finish because the run was cancelled or interrupted."""


@public
class TaskSkipped(TaskError):
    """A task did not run because a task it depends on (``after=``) did not succeed."""

    def __init__(self, message: str, *, key: Any = None, dependency: Any = None) -> None:
        super().__init__(message, key=key)
        self.dependency = dependency


@public
class FixtureError(TaskError):
    """A fixture the task asked for could not be set up (or torn down), so the task did not run.

    ``fixture`` names it; ``cause`` is the exception its set-up raised (itself, or a
    ``RemoteError`` when it could not be pickled back), also chained as ``__cause__`` with the
    worker's traceback. ``attempt`` identifies the failed set-up (None when no set-up was
    tried: the fixture had failed too often already); the pool counts distinct attempts to
    stop dispatching tasks that need a fixture that keeps failing (``fixture_failures``).
    """

    def __init__(
        self,
        message: str,
        *,
        fixture: str,
        key: Any = None,
        cause: BaseException | None = None,
        attempt: str | None = None,
    ) -> None:
        super().__init__(message, key=key)
        self.fixture = fixture
        self.cause = cause
        self.attempt = attempt


@public
class ServiceError(CorralError):
    """A ``corral.Service`` could not be started: every attempt failed. Also the ``cause``
    of the ``FixtureError`` of a task whose Service's program died while the task ran (its
    message says how: ``redis-server (pid 4711, port 40123) was killed by SIGKILL while in
    use``).

    ``attempts`` says why each attempt failed (exited early, not ready in time, ...),
    ``output`` holds the program's last output lines from the last attempt (its token
    masked). ``permanent`` is True when starting again will fail the same way (the program
    is not found, or exited with the same code and output on two ports): a fixture that
    raises it is not set up again (``fixture_failures`` is reached at once).
    """

    def __init__(
        self,
        message: str,
        *,
        argv: tuple[str, ...] = (),
        attempts: tuple[str, ...] = (),
        output: tuple[str, ...] = (),
        permanent: bool = False,
    ) -> None:
        super().__init__(message)
        self.argv = argv
        self.attempts = attempts
        self.output = output
        self.permanent = permanent

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_service_error, (self.args, self.__dict__))


def _rebuild_service_error(args: tuple[Any, ...], state: dict[str, Any]) -> ServiceError:
    error = ServiceError.__new__(ServiceError)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


@public
class RemoteError(CorralError):
    """Stands in for a worker exception that could not be pickled back.

    Keeps the original type's qualified name, its message and the worker's traceback.
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteError, (self.type_name, self.message, self.remote_traceback))


@public
class BatchError(CorralError):
    """Some tasks of a batch did not succeed. Every task still ran; ``report`` holds them all.

    The message lists the first failures, each with its whole reason (a multi-line reason such
    as a ``ServiceError``'s keeps its lines; see ``_reasons``) and, for ``map``, the item;
    tasks skipped or cancelled because of them are counted and named apart. The first
    failure's exception is the ``__cause__``, so an uncaught BatchError shows its traceback
    (a worker's too).
    """

    def __init__(self, report: Report, *, items: Sequence[Any] | None = None) -> None:
        super().__init__(batch_message(report, items))
        self.report = report
        self.__cause__ = first_cause(report)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_batch_error, (self.args, self.report))


def _rebuild_batch_error(args: tuple[Any, ...], report: Report) -> BatchError:
    error = BatchError.__new__(BatchError)
    Exception.__init__(error, *args)
    error.report = report
    return error


@public
class EffectError(CorralError):
    """``on_effect`` raised while replaying an effect (``corral.record``): the run was
    stopped (what had not finished was cancelled) and no later effect was applied.

    ``key`` and ``effect`` name the task and the effect it failed on; the exception that
    ``on_effect`` raised is the ``__cause__``; ``report`` holds every outcome (the tasks
    cancelled by the stop among them).
    """

    def __init__(self, key: Any, effect: Any, error: BaseException) -> None:
        super().__init__(
            f"on_effect raised on effect {_short(effect)} of task {key!r}: "
            f"{type(error).__name__}: {error}; the run was stopped (tasks not yet finished "
            "were cancelled) and no later effect was applied"
        )
        self.key = key
        self.effect = effect
        self.report: Report | None = None
        self.__cause__ = error

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_effect_error, (self.args, self.key, self.effect, self.report))


def _rebuild_effect_error(
    args: tuple[Any, ...], key: Any, effect: Any, report: Report | None
) -> EffectError:
    error = EffectError.__new__(EffectError)
    Exception.__init__(error, *args)
    error.key, error.effect, error.report = key, effect, report
    return error


def _short(value: Any, limit: int = 120) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RemoteTraceback(Exception):
    """The traceback text of an exception raised in a worker, set as its ``__cause__``."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


def _signal_name(exitcode: int | None) -> str | None:
    if exitcode is None or exitcode >= 0:
        return None
    import signal

    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


_SIGNAL_HINTS = {
    "SIGKILL": "killed (by a timeout, the OOM killer, or another process)",
    "SIGSEGV": "segmentation fault, usually in a C extension",
    "SIGABRT": "aborted, usually by a failed assertion in C code",
    "SIGBUS": "bus error, often a truncated memory-mapped file",
    "SIGTERM": "terminated by another process",
}


def describe_exit(
    pid: int | None, exitcode: int | None, during: str | None = None, cause: str | None = None
) -> str:
    """A human sentence for a dead worker: pid, exit code or signal, what it was doing if
    that is not plain (``during``), and the known (``cause``) or likely cause."""
    who = f"worker (pid {pid})" if pid else "worker"
    when = f" {during}" if during else ""
    name = _signal_name(exitcode)
    if name is not None:
        hint = cause or _SIGNAL_HINTS.get(name)
        return f"{who} died from {name}{when}" + (f": {hint}" if hint else "")
    if exitcode is None:
        return f"{who} vanished{when}"
    return f"{who} exited with code {exitcode}{when}"


STACK_LINES = 40
"""Lines of a worker's stack kept in an error's message (the whole stack is its ``.stack``)."""


def stack_tail(stack: str | None, what: str) -> str:
    """The tail of a TaskTimeout's or WorkerCrashed's message: where the worker was, from
    faulthandler's dump, cut to ``STACK_LINES``."""
    if not stack or not stack.strip():
        return ""
    lines = _without_corral_frames(stack.strip().splitlines())
    if len(lines) > STACK_LINES:
        cut = len(lines) - STACK_LINES
        lines = [*lines[:STACK_LINES], f"  ... {cut} more lines (see the error's .stack)"]
    body = "\n".join("  " + line for line in lines)
    return f"; {what} in:\n{body}"


_WORKER_FRAMES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_worker") + os.sep


def _without_corral_frames(lines: list[str]) -> list[str]:
    """faulthandler's lines, without the frames of corral's worker loop that called the task
    and the frames below them (multiprocessing's start-up): the message says where the task
    was; ``.stack`` keeps everything."""
    kept: list[str] = []
    skipping = False
    for line in lines:
        frame = line.strip().startswith("File ")
        if not frame:
            skipping = False
        elif _WORKER_FRAMES in line:
            skipping = True
        if not skipping:
            kept.append(line)
    return kept


class ExceptionWithTraceback:
    """Pickles an exception together with its formatted traceback, for the trip home.

    On unpickling, the exception is rebuilt and the traceback attached as ``__cause__``.
    An exception that cannot be pickled travels as a ``RemoteError`` instead.
    """

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_exception, (self.exc, self.tb))

    def fallback(self) -> ExceptionWithTraceback:
        """The same failure as a RemoteError, for exceptions that do not pickle."""
        exc = self.exc
        name = f"{type(exc).__module__}.{type(exc).__qualname__}"
        return _Prebuilt(RemoteError(name, str(exc), self.tb), self.tb)


class _Prebuilt(ExceptionWithTraceback):
    def __init__(self, exc: BaseException, tb: str) -> None:
        self.exc = exc
        self.tb = tb


def _rebuild_exception(exc: BaseException, tb: str) -> BaseException:
    exc.__cause__ = RemoteTraceback(f'\n"""\n{tb}"""')
    return exc


@public
class JournalError(CorralError):
    """A journal file that cannot be used: damaged, truncated, foreign, of another format
    version, of another batch, or failing to write. The message names the file and what is
    wrong; corral never overwrites or mixes such a file."""


@public
class JournalLocked(JournalError):
    """Another run is writing this journal; the message names its pid."""
