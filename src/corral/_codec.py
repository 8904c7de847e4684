"""Pickling for the pipe, with cloudpickle, and finding the one bad item when pickling fails.

An argument or result that cannot be pickled must fail only its own task, so when a whole
message fails to pickle, the items are tried one by one to name the culprits.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import cloudpickle

from ._errors import SerializationError

PROTOCOL = pickle.HIGHEST_PROTOCOL


def dumps(obj: Any) -> bytes:
    return cloudpickle.dumps(obj, protocol=PROTOCOL)  # type: ignore[no-any-return]


loads: Callable[[bytes], Any] = pickle.loads


def dump_function(fn: Callable[..., Any]) -> bytes:
    """Pickle a task function once, at the boundary: an unpicklable one is a caller error."""
    try:
        return dumps(fn)
    except Exception as exc:
        name = getattr(fn, "__qualname__", None) or repr(fn)
        raise SerializationError(
            f"function {name} cannot be pickled for the worker processes: {exc}"
        ) from exc


def unpicklable(items: list[Any]) -> dict[int, SerializationError]:
    """For each item that cannot be pickled, its index and the error to report for it."""
    bad: dict[int, SerializationError] = {}
    for i, item in enumerate(items):
        try:
            dumps(item)
        except Exception as exc:
            bad[i] = SerializationError(f"cannot pickle {_describe(item)}: {exc}")
    return bad


def _describe(item: Any) -> str:
    text = repr(item)
    return text if len(text) <= 80 else text[:77] + "..."
