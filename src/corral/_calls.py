"""What a worker runs for a callable object that carries its own arguments (a joblib
``BatchedCalls``). A module of its own, importing nothing, so that a worker unpickling a
reference to ``call`` loads no coordinator code (``corral.joblib`` imports the Pool)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def call(fn: Callable[[], Any]) -> Any:
    """``fn()``: the object travels as the argument, pickled with the task, while this
    function, pickled by name, is sent to each worker once."""
    return fn()
