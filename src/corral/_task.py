"""``Task``: one call the user wants made, with its own key, limits, needs and hints."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._errors import ConfigError, check_callable
from ._needs import Needs, make_needs, norm_group
from ._options import check_seconds
from ._public import public


@public
@dataclass(frozen=True, eq=False)
class Task:
    """One call: ``fn(*args, **kwargs)``.

    Args:
        fn: the function to call in a worker.
        args, kwargs: its arguments: a tuple or list (``(x,)`` for one argument; anything
            else is a ConfigError, so that ``Task(f, "abc")`` does not call ``f("a", "b",
            "c")``), and a mapping of parameter names.
        key: a name for the task in reports, errors and ``after=`` (default: its position).
        timeout: seconds before the task's worker is killed; overrides the run's timeout.
        retries: retries after a failure; overrides the run's retries.
        group: a label for grouping in progress and reports: any hashable (a string, a number,
            a tuple), shown with ``str()``.
        locks: names of exclusive locks: no two tasks sharing a name run at the same time.
            Strings or paths (``os.PathLike``, named by ``os.fspath``), compared as given.
        uses: amounts of counted resources, e.g. ``{"orcaflex": 1}``; capacities are the
            run's ``resources=``.
        memory: estimated peak memory (bytes or ``"6GiB"``), counted against the run's
            ``memory_budget``.
        after: keys of tasks that must succeed before this one starts; if one fails, this
            task is skipped.
        cost: estimated seconds; among ready tasks, higher cost (with what waits on it) first.
        priority: among ready tasks, higher first; overrides cost.
    """

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] | None = None
    key: Any = None
    timeout: float | None = None
    retries: int | None = None
    group: Any = None
    locks: Any = ()
    uses: Mapping[str, float] | None = None
    memory: int | str | None = None
    after: Any = ()
    cost: float | None = None
    priority: int = 0
    _kwargs: dict[str, Any] = field(init=False, repr=False)
    _needs: Needs = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check_callable(self.fn, "Task fn")
        object.__setattr__(self, "args", _check_args(self.args))
        object.__setattr__(self, "_kwargs", _check_kwargs(self.kwargs))
        check_seconds("timeout", self.timeout)
        r = self.retries
        if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < 0):
            raise ConfigError(f"Task retries must be a non-negative integer, not {r!r}")
        norm_group(self.group)
        needs = make_needs(self.locks, self.uses, self.memory, self.after, self.cost, self.priority)
        object.__setattr__(self, "_needs", needs)
        object.__setattr__(self, "locks", needs.locks)
        object.__setattr__(self, "after", needs.after)
        if needs.memory:
            object.__setattr__(self, "memory", needs.memory)


def _check_args(args: Any) -> tuple[Any, ...]:
    if isinstance(args, tuple):
        return args
    if isinstance(args, list):
        return tuple(args)
    if args is None:  # like kwargs=None: no arguments
        return ()
    # A string or other iterable would be spread into one argument per element.
    raise ConfigError(
        f"Task args must be a tuple or list, not {args!r:.80} ({type(args).__name__}); "
        f"did you mean `({args!r:.60},)`?"
    )


def _check_kwargs(kwargs: Any) -> dict[str, Any]:
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping):
        raise ConfigError(
            f"Task kwargs must be a mapping of parameter names to values (a dict), not "
            f"{kwargs!r:.80} ({type(kwargs).__name__})"
        )
    for name in kwargs:
        if not isinstance(name, str):
            raise ConfigError(f"Task kwargs names must be strings, not {name!r}")
    return dict(kwargs)
