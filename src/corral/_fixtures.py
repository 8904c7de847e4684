"""Fixtures: what a task asks for by parameter name, and the checks made before work starts.

    @corral.fixture                              def simulate(params, *, omc):
    def omc():                                       return omc.simulate(params)
        with corral.Service(argv) as service:
            yield Client(service.port)           corral.map(simulate, sweep, fixtures=[omc])

This module is definitions and bookkeeping only; it never calls a fixture. It is used on both
sides of a worker's pipe:

    caller's thread      ``FixtureSet`` (built by ``PoolOptions``) checks the fixtures (unknown
                         requests, cycles, scopes) and each task function (``check``): a
                         keyword-only parameter nobody supplies is a ``ConfigError`` before
                         any task is dispatched
    worker process       ``_worker.fixture_cache`` unpickles the same ``FixtureSet`` and sets
                         fixtures up on first need (``injectable`` says which parameters to
                         fill)
    engine thread        ``_failures.FixtureGuard`` counts the failed set-ups that
                         ``FixtureError``s report and, past ``fixture_failures``, fails the
                         tasks that need a broken fixture instead of dispatching them to fail
                         again

Injection follows pytest: a task function receives a fixture through a keyword-only parameter
of the same name (``def f(x, *, omc)``); a fixture function receives other fixtures through
its parameters. Arguments the task itself passes (``Task(fn, kwargs=...)``) win over fixtures.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import types
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol, overload

from ._errors import ConfigError
from ._public import public

if TYPE_CHECKING:
    pass

Scope = Literal["worker", "task"]
SCOPES = ("worker", "task")


class Fixture:
    """A function marked with ``@corral.fixture``: its name, scope and the names it requests.

    ``requests`` maps each parameter of the function to whether it has a default (a
    parameter with a default is filled only when a fixture of that name is provided).
    """

    __slots__ = ("fn", "generator", "name", "requests", "scope")

    def __init__(self, fn: Callable[..., Any], *, scope: str, name: str | None) -> None:
        if not callable(fn):
            raise ConfigError(f"@corral.fixture decorates a function, not {fn!r}")
        if scope not in SCOPES:
            raise ConfigError(f"fixture scope must be 'worker' or 'task', not {scope!r}")
        self.fn = fn
        self.scope: Scope = scope  # type: ignore[assignment]
        self.name: str = name if name is not None else _name_of(fn)
        if not self.name.isidentifier():
            raise ConfigError(f"fixture name must be a Python identifier, not {self.name!r}")
        import inspect  # on first use (issue 15): a worker without fixtures never needs it

        self.generator = inspect.isgeneratorfunction(inspect.unwrap(fn))
        self.requests = _fixture_requests(fn, self.name)

    def __repr__(self) -> str:
        return f"<corral fixture {self.name!r} ({self.scope} scope)>"


@overload
def fixture(fn: Callable[..., Any], /) -> Fixture: ...


@overload
def fixture(
    fn: None = None, /, *, scope: Scope = "worker", name: str | None = None
) -> Callable[[Callable[..., Any]], Fixture]: ...


@public
def fixture(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    scope: Scope = "worker",
    name: str | None = None,
) -> Fixture | Callable[[Callable[..., Any]], Fixture]:
    """Mark a function as a fixture: a value that tasks receive by parameter name.

    A generator function sets up before its ``yield``, gives tasks the yielded value, and
    tears down after it; a plain function's return value is given and nothing is torn down.
    ``scope="worker"`` (default): set up in a worker the first time one of its tasks needs it,
    kept for the worker's later tasks (and later ``Pool.map``/``run`` calls), torn down when
    the worker retires or the pool closes. ``scope="task"``: set up and torn down around each
    task that needs it. ``name`` defaults to the function's name.

    Example::

        @corral.fixture
        def db():
            with corral.Service(["redis-server", "--port", "{port}"]) as service:
                yield service

        def work(key, *, db): ...
        corral.map(work, keys, fixtures=[db])
    """
    if fn is None:
        return functools.partial(Fixture, scope=scope, name=name)
    return Fixture(fn, scope=scope, name=name)


class FixtureSet:
    """The fixtures of one Pool, checked together: unique names, every request provided,
    no cycle, and no worker fixture that depends on a task fixture (it would outlive it)."""

    def __init__(self, fixtures: Iterable[Any] | Fixture = ()) -> None:
        items = [fixtures] if isinstance(fixtures, Fixture) else list(fixtures)
        by_name: dict[str, Fixture] = {}
        for item in items:
            if not isinstance(item, Fixture):
                what = getattr(item, "__qualname__", None) or repr(item)
                raise ConfigError(
                    f"fixtures takes functions decorated with @corral.fixture, not {what}"
                )
            if item.name in by_name:
                raise ConfigError(f"two fixtures are named {item.name!r}")
            by_name[item.name] = item
        self._by_name = by_name
        self._check_requests()
        self._check_cycles()
        self._check_scopes()

    # -- what the set holds ---------------------------------------------------------------
    def __bool__(self) -> bool:
        return bool(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def __iter__(self) -> Iterator[Fixture]:
        return iter(self._by_name.values())

    def __getitem__(self, name: str) -> Fixture:
        return self._by_name[name]

    def __repr__(self) -> str:
        return f"FixtureSet({sorted(self._by_name)})"

    def requested(self, name: str) -> list[str]:
        """The provided fixtures that fixture ``name`` receives (its dependencies)."""
        return [r for r in self._by_name[name].requests if r in self._by_name]

    def closure(self, names: Iterable[str]) -> set[str]:
        """``names`` and every fixture they depend on, directly or not."""
        seen: set[str] = set()
        todo = [n for n in names if n in self._by_name]
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(self.requested(name))
        return seen

    # -- task functions -------------------------------------------------------------------
    def injectable(self, fn: Callable[..., Any]) -> tuple[str, ...]:
        """The keyword-only parameters of ``fn`` that a fixture of this set fills."""
        return tuple(name for name, _ in parameters(fn).keyword if name in self._by_name)

    def check(self, fn: Callable[..., Any], supplied: Iterable[str] = (), n_args: int = 1) -> None:
        """Raise ConfigError, naming the parameter, when ``fn`` has a keyword-only parameter
        without a default that neither ``supplied`` (the task's own keyword arguments) nor a
        fixture provides, or a positional parameter beyond its ``n_args`` positional arguments
        named like a fixture (fixtures fill keyword-only parameters): every call would fail."""
        if not self._by_name and _no_keyword_only(fn):
            return  # without fixtures only a keyword-only parameter could fail: there is none
        params = parameters(fn)
        for name, has_default in params.positional[n_args:]:
            if not has_default and name in self._by_name and name not in supplied:
                raise ConfigError(
                    f"{_name_of(fn)}() receives fixture {name!r} only as a keyword-only "
                    f"parameter: put it after a *, as in def {_name_of(fn)}(..., *, {name})"
                )
        for name, has_default in params.keyword:
            if has_default or name in self._by_name or name in supplied:
                continue
            given = (
                f"the fixtures given are {', '.join(sorted(self._by_name))}"
                if self._by_name
                else "no fixtures were given (fixtures=[...])"
            )
            raise ConfigError(
                f"{_name_of(fn)}() has a keyword-only parameter {name!r} without a default "
                f"that neither the task's arguments nor a fixture provide; {given}"
            )

    # -- checks of the set itself ---------------------------------------------------------
    def _check_requests(self) -> None:
        for fx in self._by_name.values():
            for name, has_default in fx.requests.items():
                if not has_default and name not in self._by_name:
                    raise ConfigError(
                        f"fixture {fx.name!r} requests {name!r}, which no fixture given "
                        f"provides (fixtures: {', '.join(sorted(self._by_name))})"
                    )

    def _check_cycles(self) -> None:
        done: set[str] = set()

        def visit(name: str, path: list[str]) -> None:
            if name in path:
                cycle = [*path[path.index(name) :], name]
                raise ConfigError(f"fixtures request each other in a cycle: {' -> '.join(cycle)}")
            if name in done:
                return
            for dep in self.requested(name):
                visit(dep, [*path, name])
            done.add(name)

        for name in self._by_name:
            visit(name, [])

    def _check_scopes(self) -> None:
        for fx in self._by_name.values():
            if fx.scope != "worker":
                continue
            for dep in self.requested(fx.name):
                if self._by_name[dep].scope == "task":
                    raise ConfigError(
                        f"worker-scoped fixture {fx.name!r} cannot request task-scoped "
                        f"fixture {dep!r}: it would outlive it"
                    )


def as_fixture_set(fixtures: Any) -> FixtureSet:
    """The ``fixtures=`` option as a checked ``FixtureSet`` (a list, one fixture, or None)."""
    if isinstance(fixtures, FixtureSet):
        return fixtures
    if fixtures is None:
        return FixtureSet()
    if not isinstance(fixtures, (Fixture, list, tuple, set, frozenset)):
        raise ConfigError(f"fixtures must be a list of @corral.fixture functions, not {fixtures!r}")
    return FixtureSet(fixtures)


class Parameters(NamedTuple):
    """``(name, has_default)`` of a function's positional and keyword-only parameters."""

    positional: tuple[tuple[str, bool], ...]
    keyword: tuple[tuple[str, bool], ...]


NO_PARAMETERS = Parameters((), ())


_PARAMETERS: weakref.WeakKeyDictionary[Any, Parameters] = weakref.WeakKeyDictionary()
_METHOD_PARAMETERS: weakref.WeakKeyDictionary[Any, Parameters] = weakref.WeakKeyDictionary()


def parameters(fn: Callable[..., Any]) -> Parameters:
    """The parameters of ``fn`` that matter for injection (memoised: ``run`` checks every
    Task, and 20,000 Tasks usually share one function).

    Memoised weakly, by the function (a bound method: by its function, as each ``obj.method``
    is a new object): the memo must not keep a task's callable, or the object a method is
    bound to, alive once the caller dropped it."""
    if isinstance(fn, types.MethodType):
        memo, key = _METHOD_PARAMETERS, fn.__func__
    else:
        memo, key = _PARAMETERS, fn
    try:
        found = memo.get(key)
    except TypeError:  # not weakly referable, or unhashable: not memoised
        return _parameters(fn)
    if found is None:
        found = _parameters(fn)
        with contextlib.suppress(TypeError):
            memo[key] = found
    return found


def _parameters(fn: Callable[..., Any]) -> Parameters:
    import inspect  # on first use (issue 15, start-up): never, for builtins without fixtures

    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # builtins without a signature: nothing to inject
        return NO_PARAMETERS
    positional: list[tuple[str, bool]] = []
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            break
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            positional.append((p.name, p.default is not p.empty))
    keyword = [(p.name, p.default is not p.empty) for p in params if p.kind is p.KEYWORD_ONLY]
    return Parameters(tuple(positional), tuple(keyword))


def _no_keyword_only(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is a C function whose signature has no ``*`` (so no keyword-only
    parameter), told from its text signature alone: ``inspect.signature`` parses that text
    with ``tokenize``, whose first use compiles a large regular expression (~10 ms, on the first
    ``map`` of a builtin such as ``abs``)."""
    text = getattr(fn, "__text_signature__", None)
    return isinstance(text, str) and "*" not in text


def _fixture_requests(fn: Callable[..., Any], name: str) -> dict[str, bool]:
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return {}
    requests: dict[str, bool] = {}
    for p in params:
        if p.kind is p.POSITIONAL_ONLY:
            raise ConfigError(
                f"fixture {name!r}: parameter {p.name!r} is positional-only; fixtures receive "
                "other fixtures by name"
            )
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            requests[p.name] = p.default is not p.empty
    return requests


def _name_of(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", None)
    return str(name) if name else repr(fn)


# -- what a set-up starts that can be lost later (a Service's program) ---------------------------
class Watched(Protocol):
    """Something a fixture's set-up started that can die while the fixture is kept (a
    ``corral.Service``'s program): ``_lost`` is the error saying how, or None while fine;
    ``_when_ended`` calls back when it may have died (so that nothing is asked per task)."""

    def _lost(self, dying: bool = False) -> BaseException | None: ...

    def _when_ended(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` (from any thread) when it may have died."""


_setting_up = threading.local()
"""``found``: the list that ``watch`` appends to while a fixture is being set up on this
thread (``watching``), else absent. Set and cleared by ``watching`` alone."""


@contextlib.contextmanager
def watching() -> Iterator[list[Watched]]:
    """Collect what ``watch`` is given during a fixture's set-up (``_worker.fixture_cache``)."""
    previous = getattr(_setting_up, "found", None)
    found: list[Watched] = []
    _setting_up.found = found
    try:
        yield found
    finally:
        _setting_up.found = previous


def watch(thing: Watched) -> None:
    """Called by what a set-up starts (``Service.start``): the fixture being set up, if any,
    now depends on ``thing`` staying alive."""
    found = getattr(_setting_up, "found", None)
    if found is not None:
        found.append(thing)
