"""``Task``: one call the user wants made, with its own key, timeout and retry count."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._errors import ConfigError
from ._options import _check_positive_number
from ._public import public


@public
@dataclass(frozen=True, eq=False)
class Task:
    """One call: ``fn(*args, **kwargs)``.

    Args:
        fn: the function to call in a worker.
        args, kwargs: its arguments.
        key: a name for the task in reports and errors (default: its position in the batch).
        timeout: seconds before the task's worker is killed; overrides the run's timeout.
        retries: retries after a failure; overrides the run's retries.
        group: a label for grouping in progress and reports.
    """

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] | None = None
    key: Any = None
    timeout: float | None = None
    retries: int | None = None
    group: str | None = None
    _kwargs: dict[str, Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise ConfigError(f"Task fn must be callable, not {self.fn!r}")
        args: Any = self.args
        if not isinstance(args, tuple):
            object.__setattr__(self, "args", tuple(args))
        object.__setattr__(self, "_kwargs", dict(self.kwargs or {}))
        _check_positive_number("timeout", self.timeout)
        r = self.retries
        if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < 0):
            raise ConfigError(f"Task retries must be a non-negative integer, not {r!r}")
