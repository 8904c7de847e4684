"""The fixtures of one worker process (or of the serial caller): set up on first need, kept,
torn down at the end.

    worker process k (or the caller's thread, serial)
    ─────────────────────────────────────────────────
    _worker loads a task function ─► FixtureCache.bind(fn) ─► Bound(fn, names)
    _execute runs an item ─► Bound(item) ─► FixtureCache.call:
        worker-scope fixture missing ─► set up, kept in ``_values`` until ``close``
        task-scope fixture ─► set up, torn down when the item ends
        fn(item, **fixtures)
    _worker exits its loop (STOP: retired, pool closed) ─► FixtureCache.close(): teardown,
        last set up first; serial: ``SerialBackend.close``

A stopping worker has ``fixture_teardown_timeout`` seconds (a Pool option) to tear its
fixtures down and exit. It announces each fixture before tearing it down (``on_teardown``); if
the time passes, the coordinator kills it and logs the fixture it was stuck on. In serial mode
the teardown runs in the caller's process, where nothing can stop it: a warning names it.

Fixture code is user code: it runs only inside a task's call (through ``Bound``, called by
``_worker.execute``) and in ``close``. Nothing runs on a worker that is killed (timeout, cancel,
crash, the coordinator's death): a ``corral.Service`` guards against that itself, with a
keeper process (``_services.service``).

A worker fixture whose set-up started a ``corral.Service`` (``_fixtures.watch``) lives as long
as the program does. Before each task that needs it, a program found dead (SIGKILLed, crashed)
has its fixture torn down (``stop``: its port and keeper freed) and set up again, so the task
gets a working one; a task that raises while a program it used is dying or dead fails with a
``FixtureError`` naming the fixture, whose ``cause`` is a ``ServiceError`` saying how the
program ended (the task's own exception chained). Such tasks do not count as failed set-ups.
Nothing is checked per task while the programs run: a Service's reader thread sets
``suspect`` when the program's output ends, and the next task checks first.

    Service reader thread: the program's output ended ─► cache.suspect = True (a flag only)
    task ─► Bound: suspect? ─► call ─► a watched program exited? ─► tear it (and what was set
              │                                                     up on it) down ─► set up
              │                                                     again ─► task runs
              └─ task raised (fast path or call) ─► a watched program it needs dying or dead?
                                     ─► FixtureError(cause=ServiceError), fixture torn down

A set-up that raises fails the task with a ``FixtureError`` and is tried again for the next
task. After ``limit`` failures in a row of the same fixture in this process, the next tasks
fail at once without a new attempt: a chunk of 500 tasks must not start a failing server 500
times (the engine stops dispatching such tasks once it has seen ``limit`` failures too).
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Generator
from typing import Any

from .. import _codec
from .._errors import ExceptionWithTraceback, FixtureError, TaskTimeout
from .._fixtures import Fixture, FixtureSet, Watched, watching

log = logging.getLogger("corral")

BOUND_CACHE = 64
"""Serial mode binds functions on every resolve; the most recent bindings are kept."""


def _nothing() -> None:
    pass


def _ignore(name: str) -> None:
    pass


class _TaskScope:
    """The task-scoped fixtures of one running item, torn down when it ends."""

    __slots__ = ("teardowns", "values")

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.teardowns: list[tuple[str, Generator[Any, None, None]]] = []


class Bound:
    """A task function with its fixtures: ``Bound(item)`` calls ``fn(item, **fixtures)``.

    Once every fixture it needs is a worker fixture that is set up, the values are kept here
    (``fixed``) and a call costs one dict unpacking (a chunk of 20,000 tiny tasks must stay
    cheap); ``FixtureCache.close`` clears them.
    """

    __slots__ = ("cache", "fixed", "fn", "names")

    def __init__(self, fn: Callable[..., Any], names: tuple[str, ...], cache: FixtureCache):
        self.fn = fn
        self.names = names
        self.cache = cache
        self.fixed: dict[str, Any] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        fixed = self.fixed
        if fixed is not None and not kwargs and not self.cache.suspect:
            try:
                return self.fn(*args, **fixed)
            except Exception as exc:
                self.cache.raise_if_lost(self.names, exc)
                raise
        return self.cache.call(self, args, kwargs)


class FixtureCache:
    """``warn_after``: seconds after which a ``close`` that has not finished logs the fixture
    it is stuck on (serial: nothing can stop a teardown in the caller's own process). A
    worker process passes None: its coordinator kills it past ``fixture_teardown_timeout``
    and logs the fixture that ``on_teardown`` announced."""

    def __init__(
        self, fixtures: FixtureSet, limit: int | None, *, warn_after: float | None = None
    ) -> None:
        self._set = fixtures
        self._limit = limit
        self._warn_after = warn_after
        self._values: dict[str, Any] = {}
        self._teardowns: list[tuple[str, Generator[Any, None, None]]] = []
        self._failures: dict[str, tuple[int, FixtureError]] = {}
        # Attempt ids must differ across workers and worker generations (pids are reused).
        self._tag = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._attempt_ids = itertools.count(1)
        self._bound: OrderedDict[int, tuple[Callable[..., Any], Callable[..., Any]]] = OrderedDict()
        self._fixed: list[Bound] = []  # Bounds holding worker fixture values, cleared at close
        self._watched: dict[str, list[Watched]] = {}  # worker fixture → the Services it started
        self.suspect = False
        """Set by a watched Service's reader thread when the program's output ends (it may
        have died): the next task checks them first (``_replace_lost``). Only a flag crosses
        threads; everything else is this thread's."""
        self.on_set_up: Callable[[], None] = _nothing
        """Called when a worker fixture is set up: the worker restarts the running task's
        timeout clock (set-up time is not the task's; a hung set-up still times out)."""
        self.on_teardown: Callable[[str], None] = _ignore
        """Called with a worker fixture's name before ``close`` tears it down, and with ""
        when every teardown is done: a worker tells its coordinator, which names the fixture
        if it must kill the worker for taking too long."""

    # -- binding task functions -----------------------------------------------------------
    def bind(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` itself when it asks for no fixture, else a ``Bound`` that supplies them."""
        names = self._set.injectable(fn)
        return Bound(fn, names, self) if names else fn

    def resolver(self, resolve: Callable[[int], Callable[..., Any]]) -> Callable[[int], Any]:
        """Wrap a ``fn_id -> function`` lookup so that it returns bound functions (serial)."""

        def bound(fn_id: int) -> Callable[..., Any]:
            fn = resolve(fn_id)
            hit = self._bound.get(fn_id)
            if hit is not None and hit[0] is fn:
                self._bound.move_to_end(fn_id)
                return hit[1]
            self._bound[fn_id] = (fn, self.bind(fn))
            while len(self._bound) > BOUND_CACHE:
                self._bound.popitem(last=False)
            return self._bound[fn_id][1]

        return bound

    # -- one task -------------------------------------------------------------------------
    def call(self, bound: Bound, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        scope = _TaskScope()
        own = bool(kwargs)
        if self.suspect:
            self.suspect = False  # before the checks: an end seen after them sets it again
            self._replace_lost()
        try:
            for name in bound.names:
                if name not in kwargs:  # the task's own arguments win
                    kwargs[name] = self._get(name, scope)
            if not own and not scope.values:  # worker fixtures only: keep them on the Bound
                bound.fixed = dict(kwargs)
                self._fixed.append(bound)
            result = bound.fn(*args, **kwargs)
        except Exception as exc:
            self._teardown_task(scope, raising=False)
            self.raise_if_lost(bound.names, exc)
            raise
        except BaseException:
            self._teardown_task(scope, raising=False)
            raise
        self._teardown_task(scope, raising=True)
        return result

    def _get(self, name: str, scope: _TaskScope) -> Any:
        fx = self._set[name]
        if fx.scope == "worker" and name in self._values:
            return self._values[name]
        if fx.scope == "task" and name in scope.values:
            return scope.values[name]
        self._refuse_if_failing(name)
        deps = {dep: self._get(dep, scope) for dep in self._set.requested(name)}
        try:
            with watching() as started:
                value, teardown = _set_up(fx, deps)
        except (TaskTimeout, FixtureError):  # the serial alarm; a dependency's own failure
            raise
        except Exception as exc:
            raise self._failed(name, exc) from exc
        self._failures.pop(name, None)
        if fx.scope == "worker":
            self._values[name] = value
            if teardown is not None:
                self._teardowns.append((name, teardown))
            if started:
                self._watched[name] = started
                for thing in started:
                    thing._when_ended(self._ended)
            self.on_set_up()
        else:
            scope.values[name] = value
            if teardown is not None:
                scope.teardowns.append((name, teardown))
        return value

    def _failed(self, name: str, exc: Exception) -> FixtureError:
        count = self._failures.get(name, (0, None))[0] + 1
        error = FixtureError(
            f"fixture {name!r} failed to set up: {type(exc).__name__}: {exc}",
            fixture=name,
            cause=_portable(exc),
            attempt=f"{self._tag}-{next(self._attempt_ids)}",
        )
        if self._limit is not None and getattr(exc, "permanent", False):
            count = max(count, self._limit)  # e.g. a Service that cannot start: give up now
        self._failures[name] = (count, error)
        return error

    def _refuse_if_failing(self, name: str) -> None:
        count, last = self._failures.get(name, (0, None))
        if self._limit is None or last is None or count < self._limit:
            return
        error = FixtureError(
            f"fixture {name!r} was not set up again: it failed {count} times in a row in this "
            f"worker (fixture_failures={self._limit}); last error: {last.args[0]}"
            if not getattr(last.cause, "permanent", False)
            else f"fixture {name!r} was not set up again: it would fail the same way; "
            f"last error: {last.args[0]}",
            fixture=name,
            cause=last.cause,
        )
        raise error from last

    # -- a Service that died (see the module docstring) -----------------------------------
    def _replace_lost(self) -> None:
        """Before a task, once a reader thread said an output ended: tear down the fixtures
        whose program has exited, whether this task needs them or not (set up again when
        next needed)."""
        for name, things in list(self._watched.items()):
            if name not in self._watched:  # torn down with one before it
                continue
            for thing in things:
                error = thing._lost()
                if error is not None:
                    log.warning("corral: fixture %r is set up again: %s", name, error)
                    self._tear_down_from(name)
                    break

    def _ended(self) -> None:
        self.suspect = True  # a Service's reader thread: a flag only

    def raise_if_lost(self, names: tuple[str, ...], exc: Exception) -> None:
        """After a task raised ``exc``: if a program of a fixture it needs is dying or dead,
        raise the task's FixtureError instead (``exc`` chained); that fixture torn down."""
        if self._watched:
            lost = self._lost_during(names)
            if lost is not None:
                raise lost from exc

    def _lost_during(self, names: tuple[str, ...]) -> FixtureError | None:
        for name in self._set.closure(names):
            for thing in self._watched.get(name, ()):
                error = thing._lost(dying=True)
                if error is not None:
                    self._tear_down_from(name)
                    return FixtureError(
                        f"fixture {name!r} lost its service while the task ran: {error}",
                        fixture=name,
                        cause=_portable(error),
                    )
        return None

    def _tear_down_from(self, lost: str) -> None:
        """Tear down worker fixture ``lost`` and those set up with it (they hold its
        value), last set up first; they are set up again when next needed."""
        doomed = {n for n in self._values if lost in self._set.closure([n])}
        for bound in self._fixed:
            bound.fixed = None
        self._fixed.clear()
        kept = []
        for name, gen in reversed(self._teardowns):
            if name not in doomed:
                kept.append((name, gen))
                continue
            try:
                _finish(gen, name)
            except Exception:
                log.warning("corral: teardown of fixture %r failed", name, exc_info=True)
        self._teardowns = kept[::-1]
        for name in doomed:
            self._values.pop(name, None)
            self._watched.pop(name, None)

    def _teardown_task(self, scope: _TaskScope, *, raising: bool) -> None:
        """Tear down the item's task fixtures, last first. A teardown that fails fails a task
        that had succeeded (``raising``); when the task failed already, it is only logged."""
        failure: FixtureError | None = None
        for name, gen in reversed(scope.teardowns):
            try:
                _finish(gen, name)
            except Exception as exc:
                if not raising or failure is not None:
                    log.warning("corral: teardown of fixture %r failed", name, exc_info=True)
                    continue
                failure = FixtureError(
                    f"fixture {name!r} failed to tear down: {type(exc).__name__}: {exc}",
                    fixture=name,
                    cause=_portable(exc),
                )
                failure.__cause__ = exc
        if failure is not None:
            raise failure

    # -- the end --------------------------------------------------------------------------
    def close(self) -> None:
        """Tear down the worker fixtures, last set up first; failures are logged."""
        teardowns, self._teardowns = self._teardowns, []
        self._values.clear()
        self._watched.clear()
        for bound in self._fixed:
            bound.fixed = None
        self._fixed.clear()
        if not teardowns:
            return
        current = [""]  # the fixture being torn down, for the warning timer
        timer = self._overrun_warning(current)
        try:
            for name, gen in reversed(teardowns):
                current[0] = name
                self.on_teardown(name)
                try:
                    _finish(gen, name)
                except Exception:
                    log.warning("corral: teardown of fixture %r failed", name, exc_info=True)
            self.on_teardown("")
        finally:
            if timer is not None:
                timer.cancel()

    def _overrun_warning(self, current: list[str]) -> threading.Timer | None:
        if self._warn_after is None:
            return None
        grace = self._warn_after

        def warn() -> None:
            log.warning(
                "corral: teardown of fixture %r has not finished after %g s "
                "(fixture_teardown_timeout); it runs in this process (serial), where corral "
                "cannot stop it",
                current[0],
                grace,
            )

        timer = threading.Timer(grace, warn)
        timer.daemon = True
        timer.start()
        return timer


def _set_up(fx: Fixture, deps: dict[str, Any]) -> tuple[Any, Generator[Any, None, None] | None]:
    if not fx.generator:
        return fx.fn(**deps), None
    gen = fx.fn(**deps)
    try:
        value = next(gen)
    except StopIteration:
        raise RuntimeError(f"fixture {fx.name!r} did not yield a value") from None
    return value, gen


def _finish(gen: Generator[Any, None, None], name: str) -> None:
    try:
        next(gen)
    except StopIteration:
        return
    gen.close()
    raise RuntimeError(f"fixture {name!r} yielded more than once")


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling back to the coordinator, else a RemoteError for it."""
    return _codec.portable(ExceptionWithTraceback(exc)).exc


def from_bytes(blob: bytes) -> FixtureCache:
    """The cache of a worker process, from what ``ProcessBackend`` sent: (FixtureSet, limit)."""
    fixtures, limit = _codec.loads(blob)
    return FixtureCache(fixtures, limit)
