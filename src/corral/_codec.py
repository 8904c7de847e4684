"""Pickling for the pipe, with cloudpickle, and finding the one bad item when pickling fails.

An argument or result that cannot be pickled must fail only its own task, so when a whole
message fails to pickle, the items are tried one by one to name the culprits.

Functions and classes of ``__main__`` travel by value (workers never import the main script,
see ``_backends.process``). cloudpickle >= 3.1 renames the file of such code to
``<dynamic-code>``, which would make a worker's traceback read ``File "<dynamic-code>", line 6,
in f`` with no source line. ``_Pickler`` keeps the real file name, so the worker's traceback
names the script and shows its lines (read from the file, as in the coordinator).
"""

from __future__ import annotations

import contextlib
import io
import linecache
import os
import pickle
import sys
import types
from collections import ChainMap
from collections.abc import Callable
from typing import Any

import cloudpickle

from ._errors import SerializationError

PROTOCOL = pickle.HIGHEST_PROTOCOL
_ANONYMOUS_FILE = "<dynamic-code>"
_cloudpickle_table: Any = getattr(cloudpickle.Pickler, "dispatch_table", {})
_code_reduce: Any = _cloudpickle_table.get(types.CodeType)


def _code_reduce_with_filename(code: types.CodeType) -> Any:
    rebuild, args = _code_reduce(code)
    if _ANONYMOUS_FILE not in args:
        return rebuild, args
    filename = code.co_filename
    args = tuple(filename if a == _ANONYMOUS_FILE else a for a in args)
    lines = _unsaved_source(filename)
    if lines is None:
        return rebuild, args
    return _rebuild_with_source, (rebuild, args, filename, lines)


def _unsaved_source(filename: str) -> list[str] | None:
    """The lines of a source that only this process's ``linecache`` holds (a notebook cell,
    code given to ``exec`` and registered there), so the worker's traceback can show them;
    None for a file the worker can read itself, or a source nobody kept (``<stdin>``)."""
    entry: Any = linecache.cache.get(filename)
    if entry is None or len(entry) < 3 or os.path.exists(filename):
        return None  # (a lazy entry, a 1-tuple, has no lines yet)
    lines = entry[2]
    return list(lines) if lines else None


def _rebuild_with_source(
    rebuild: Callable[..., Any], args: tuple[Any, ...], filename: str, lines: list[str]
) -> Any:
    """In the worker: register the shipped source for tracebacks, then rebuild the code."""
    if filename not in linecache.cache:
        # mtime None: linecache.checkcache keeps the entry (there is no file to compare to)
        linecache.cache[filename] = (sum(map(len, lines)), None, lines, filename)
    return rebuild(*args)


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    if _code_reduce is not None:
        dispatch_table = ChainMap({types.CodeType: _code_reduce_with_filename}, _cloudpickle_table)


_RUN_PATH = "<run_path>"
_run_path_by_value = False


def _run_path_module_by_value() -> None:
    """Functions and classes of a script run with ``runpy.run_path`` travel by value.

    cloudpickle sends ``__main__`` by value, but ``run_path`` runs the script in a temporary
    module ``<run_path>`` (no spec, not importable): pickled by reference, its functions would
    fail to unpickle in every worker. ``register_pickle_by_value`` is cloudpickle's own switch
    for this, by module name; no importable module can have that name.
    """
    global _run_path_by_value
    module = sys.modules.get(_RUN_PATH)
    if module is None or getattr(module, "__spec__", None) is not None:
        return
    with contextlib.suppress(Exception):
        cloudpickle.register_pickle_by_value(module)
        _run_path_by_value = True


def dumps(obj: Any) -> bytes:
    if not _run_path_by_value and _RUN_PATH in sys.modules:
        _run_path_module_by_value()
    with io.BytesIO() as file:
        _Pickler(file, protocol=PROTOCOL).dump(obj)
        return file.getvalue()


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
