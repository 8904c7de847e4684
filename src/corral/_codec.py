"""Pickling for the pipe, with cloudpickle, and finding the one bad item when pickling fails.

An argument or result that cannot be pickled must fail only its own task, so when a whole
message fails to pickle, the items are tried one by one to name the culprits. Pickling runs
user code (``__reduce__``, ``__getstate__``), which may raise anything, ``SystemExit``
included: where that code runs on the engine thread or in a worker (never a Ctrl-C there),
every exception is the item's failure.
"""

from __future__ import annotations

import io
import pickle
import struct
from collections.abc import Callable
from typing import Any

import cloudpickle

from ._errors import SerializationError

PROTOCOL = pickle.HIGHEST_PROTOCOL


def dumps(obj: Any) -> bytes:
    return cloudpickle.dumps(obj, protocol=PROTOCOL)  # type: ignore[no-any-return]


loads: Callable[[bytes], Any] = pickle.loads

CALL_HEADER = struct.Struct("<q")
"""A Call's id, ahead of its pickle: the worker reads it before unpickling anything, so that a
worker that dies or fails while unpickling a Call can still be told which Call it was."""


def dumps_call(call: Any) -> bytes:
    """A ``_messages.Call``'s bytes for the pipe: its id, then the pickled Call."""
    with io.BytesIO() as buffer:
        buffer.write(CALL_HEADER.pack(call.call_id))
        cloudpickle.CloudPickler(buffer, protocol=PROTOCOL).dump(call)
        return buffer.getvalue()


def call_id_of(data: bytes) -> int:
    """The id of the Call whose bytes (``dumps_call``) are ``data``."""
    call_id: int = CALL_HEADER.unpack_from(data)[0]
    return call_id


def loads_call(data: bytes) -> Any:
    return pickle.loads(memoryview(data)[CALL_HEADER.size :])


def dump_function(fn: Callable[..., Any]) -> bytes:
    """Pickle a task function once, at the boundary: an unpicklable one is a caller error."""
    try:
        return dumps(fn)
    except (Exception, SystemExit, GeneratorExit) as exc:  # a Ctrl-C here is the user's
        name = getattr(fn, "__qualname__", None) or repr(fn)
        raise SerializationError(
            f"function {name} cannot be pickled for the worker processes: {describe_error(exc)}"
        ) from exc


def unpicklable(items: list[Any], what: str = "") -> dict[int, SerializationError]:
    """For each item that cannot be pickled, its index and the error to report for it
    (``what`` says what the item is: ``"the result "``)."""
    bad: dict[int, SerializationError] = {}
    for i, item in enumerate(items):
        try:
            dumps(item)
        except BaseException as exc:  # engine thread or worker: see the module docstring
            why = describe_error(exc)
            bad[i] = SerializationError(f"cannot pickle {what}{_describe(item)}: {why}")
    return bad


def describe_error(exc: BaseException) -> str:
    """``exc`` in a message: an Exception's text; the type too when the text alone would say
    nothing (``SystemExit: 3``, ``KeyboardInterrupt``)."""
    try:
        text = str(exc)
    except BaseException:  # its __str__ raised: the type is all there is to say
        text = ""
    if isinstance(exc, Exception) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _describe(item: Any) -> str:
    try:
        text = repr(item)
    except BaseException:
        text = f"<{type(item).__name__} object>"
    return text if len(text) <= 80 else text[:77] + "..."
