"""Pickling for the pipe, with cloudpickle, and finding the one bad item when pickling fails.

An argument or result that cannot be pickled must fail only its own task, so when a whole
message fails to pickle, the items are tried one by one to name the culprits. Pickling runs
user code (``__reduce__``, ``__getstate__``), which may raise anything, ``SystemExit``
included: where that code runs on the engine thread or in a worker (never a Ctrl-C there),
every exception is the item's failure.

Functions and classes of ``__main__`` travel by value (workers never import the main script,
see ``_backends.process``). cloudpickle >= 3.1 renames the file of such code to
``<dynamic-code>``, which would make a worker's traceback read ``File "<dynamic-code>", line 6,
in f`` with no source line. ``_Pickler`` keeps the real file name, so the worker's traceback
names the script and shows its lines (read from the file, as in the coordinator).

What pickles big (``WARN_BYTES``) is copied through a pipe for every worker or every task, and
held in memory on both sides meanwhile: ``SizeWarnings`` says so once per Pool, naming the
function or the argument, and points to ``corral.share``.
"""

from __future__ import annotations

import array
import contextlib
import functools
import io
import linecache
import os
import pickle
import struct
import sys
import threading
import types
import warnings
import weakref
from collections import ChainMap
from collections.abc import Callable
from typing import Any

from . import _messages

try:  # hashlib's blake2b without hashlib, whose OpenSSL start is a few ms of every start
    from _blake2 import blake2b as blake2b
except ImportError:  # pragma: no cover - a CPython built without it
    from hashlib import blake2b as blake2b
from ._errors import ExceptionWithTraceback, SerializationError

PROTOCOL = pickle.HIGHEST_PROTOCOL
_ANONYMOUS_FILE = "<dynamic-code>"

# -- cloudpickle, imported on first need ---------------------------------------------------------
#
# Importing cloudpickle (with platform, uuid, hashlib) is ~20 % of a fork server's start and a
# few ms of a coordinator's, and most messages do not need it: a Call of built-in values for a
# function already pickled to bytes, a Result of numbers. ``_PlainPickler`` pickles those with
# plain pickle and gives up (``_NeedsCloudpickle``) at the first object of any other type; the
# message is then pickled again by cloudpickle, and so is every later one in this process
# (one wasted attempt at most). The bytes are the same as cloudpickle's for such messages:
# cloudpickle changes only how functions, classes and a few special objects pickle.


class _NeedsCloudpickle(Exception):
    pass


_PLAIN: frozenset[Any] = frozenset(
    {_messages.Call, _messages.Result, _messages.Handover, array.array}
)
"""Types (besides those the C pickler handles before asking: int, float, str, bytes, tuple,
list, dict, set, frozenset, bytearray, bool, None) that plain pickle takes as cloudpickle would.
Built-in functions (``abs``, ``array``'s reconstructor) pickle by name in both."""


class _PlainPickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if kind in _PLAIN or (kind is type and obj in _PLAIN):
            return NotImplemented
        if kind is types.BuiltinFunctionType and isinstance(
            getattr(obj, "__self__", None), types.ModuleType | None
        ):
            return NotImplemented  # a module's built-in function, by name: not a bound method
        if kind is types.FunctionType and _by_name(obj):
            return NotImplemented
        raise _NeedsCloudpickle


def _by_name(fn: types.FunctionType) -> bool:
    """Whether cloudpickle would pickle ``fn`` by reference (module and name), as plain pickle
    does: its rule (``_should_pickle_by_reference``) once cloudpickle is loaded; before that
    (nothing can be registered by value yet) the same test, done here: a module other than
    ``__main__`` (or ``runpy.run_path``'s), imported, where the name leads back to ``fn``."""
    if _cloudpickle is not None or "cloudpickle" in sys.modules:
        _load_cloudpickle()
        return _should_pickle_by_reference is not None and _should_pickle_by_reference(fn)
    module = sys.modules.get(fn.__module__) if fn.__module__ not in _NOT_BY_NAME else None
    if module is None:
        return False
    found: Any = module
    for part in fn.__qualname__.split("."):
        found = getattr(found, part, None)
    return found is fn


_NOT_BY_NAME = frozenset({"__main__", "<run_path>", None})


_plain_ok = True  # false after the first message plain pickle could not take
_cloudpickle: Any = None  # the module, once imported
_Pickler: Any = None
_StatePickler: Any = None
_code_reduce: Any = None
_should_pickle_by_reference: Callable[[Any], bool] | None = None


def _load_cloudpickle() -> Any:
    """cloudpickle, imported, and the picklers built on it (any thread: idempotent)."""
    global _cloudpickle, _Pickler, _StatePickler, _code_reduce, _should_pickle_by_reference
    if _cloudpickle is not None:
        return _cloudpickle
    import cloudpickle

    table: Any = getattr(cloudpickle.Pickler, "dispatch_table", {})
    _code_reduce = table.get(types.CodeType)

    class Pickler(cloudpickle.Pickler):  # type: ignore[misc]
        if _code_reduce is not None:
            dispatch_table = ChainMap({types.CodeType: _code_reduce_with_filename}, table)

    class StatePickler(cloudpickle.Pickler):  # type: ignore[misc]
        reducer_override = _state_reducer_override

    _Pickler, _StatePickler = Pickler, StatePickler
    # cloudpickle's own rule for what it pickles by value (private, named so since
    # cloudpickle 2.0); without it, no fingerprints: functions are pickled for every batch.
    _should_pickle_by_reference = getattr(
        getattr(cloudpickle, "cloudpickle", None), "_should_pickle_by_reference", None
    )
    _cloudpickle = cloudpickle
    return cloudpickle


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
        _load_cloudpickle().register_pickle_by_value(module)
        _run_path_by_value = True


WARN_BYTES = 16 << 20
"""A function or an argument that pickles to more than this is warned about (once per Pool)."""


def dumps(obj: Any) -> bytes:
    with io.BytesIO() as file:
        _dump_into(file, obj)
        return file.getvalue()


def _dump_into(file: io.BytesIO, obj: Any, *, learn: bool = True) -> None:
    """Pickle ``obj`` into ``file``: plain pickle while it suffices, else cloudpickle.
    ``learn``: a message plain pickle cannot take turns it off for the rest of the process."""
    global _plain_ok
    if _plain_ok:
        start = file.tell()
        try:
            _PlainPickler(file, protocol=PROTOCOL).dump(obj)
            return
        except Exception as exc:  # no user code ran: cloudpickle tries again, and says why
            if learn and isinstance(exc, _NeedsCloudpickle):
                _plain_ok = False
            file.seek(start)
            file.truncate()
    if not _run_path_by_value and _RUN_PATH in sys.modules:
        _run_path_module_by_value()
    if _Pickler is None:
        _load_cloudpickle()
    _Pickler(file, protocol=PROTOCOL).dump(obj)


loads: Callable[[bytes], Any] = pickle.loads

CALL_HEADER = struct.Struct("<q")
"""A Call's id, ahead of its pickle: the worker reads it before unpickling anything, so that a
worker that dies or fails while unpickling a Call can still be told which Call it was."""


def dumps_call(call: Any) -> bytes:
    """A ``_messages.Call``'s bytes for the pipe: its id, then the pickled Call."""
    with io.BytesIO() as buffer:
        buffer.write(CALL_HEADER.pack(call.call_id))
        _dump_into(buffer, call)
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
        with io.BytesIO() as file:  # a function of __main__ says nothing about the messages
            _dump_into(file, fn, learn=False)
            return file.getvalue()
    except (Exception, SystemExit, GeneratorExit) as exc:  # a Ctrl-C here is the user's
        name = getattr(fn, "__qualname__", None) or repr(fn)
        raise SerializationError(
            f"function {name} cannot be pickled for the worker processes: {describe_error(exc)}"
        ) from exc


def fingerprint(fn: Callable[..., Any]) -> bytes | None:
    """A digest that changes whenever ``dump_function(fn)`` of this same object could
    change: what cloudpickle reads of each function it pickles by value (code, names,
    defaults, closure values, the globals its code names, recursively), pickled and hashed.
    A few times cheaper than ``dump_function``, which also scans ``sys.modules`` for the
    submodules each such function uses (the one thing left out here: a submodule imported
    later is not noticed). None when it cannot be made; then the function is pickled."""
    _load_cloudpickle()
    if _should_pickle_by_reference is None:
        return None
    digest = _Digest()
    try:
        _StatePickler(digest, protocol=PROTOCOL).dump(fn)
    except Exception:
        return None
    return digest.hash.digest()


class _Digest:
    """A file that hashes what is written to it: a fingerprint is never held whole (a closure
    over a big array would make it as big as the array)."""

    def __init__(self) -> None:
        self.hash = blake2b(digest_size=16)

    def write(self, data: Any) -> int:
        self.hash.update(data)
        return len(data) if not isinstance(data, memoryview) else data.nbytes


def _state_reducer_override(self: Any, obj: Any) -> Any:
    """``_StatePickler.reducer_override``: functions pickled by value become their state."""
    by_reference = _should_pickle_by_reference
    if isinstance(obj, types.FunctionType) and by_reference is not None and not by_reference(obj):
        # Never loaded. State, not arguments: ``obj`` is memoized before its state is
        # saved, so a function that names itself (recursion) ends there.
        return (tuple, (), _function_state(obj))
    return _cloudpickle.Pickler.reducer_override(self, obj)


def _function_state(fn: types.FunctionType) -> tuple[Any, ...]:
    cells = []
    for cell in fn.__closure__ or ():
        try:
            cells.append(cell.cell_contents)
        except ValueError:  # an empty cell
            cells.append(_EMPTY_CELL)
    names = fn.__globals__
    return (
        fn.__code__,
        fn.__name__,
        fn.__qualname__,
        fn.__module__,
        fn.__doc__,
        fn.__annotations__,
        fn.__defaults__,
        fn.__kwdefaults__,
        getattr(fn, "__type_params__", ()),
        fn.__dict__,
        cells,
        [(name, names[name]) for name in _global_names(fn.__code__) if name in names],
    )


_EMPTY_CELL = "<empty cell>"


@functools.lru_cache(maxsize=1024)
def _global_names(code: types.CodeType) -> tuple[str, ...]:
    """The names ``code`` (and the code nested in it) may read as globals, sorted."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.update(_global_names(const))
    return tuple(sorted(names))


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
            bad[i].__cause__ = exc.with_traceback(None)  # the original (the Executor's error)
    return bad


class SizeWarnings:
    """One Pool's warnings about big pickles: once per function name, and once for arguments.

    ``function`` is called on callers' threads as a batch is made (the warning points at the
    caller's line); ``arguments`` only on the engine thread, with the size of a Call it just
    pickled, and it looks for the culprit only when that Call is bigger than ``WARN_BYTES``
    (once per batch: that search pickles the Call's items again)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._functions: set[str] = set()
        self._argument_warned = False
        self._searched: weakref.WeakSet[Any] = weakref.WeakSet()

    def function(self, fn: Callable[..., Any], size: int) -> None:
        if size <= WARN_BYTES:
            return
        name = _function_name(fn)
        with self._lock:
            if name in self._functions:
                return
            self._functions.add(name)
        _warn(
            f"corral: the task function {name} pickles to {human_size(size)}: it is copied to "
            "every worker process, with everything it captures (closure variables, the globals "
            "it reads). Share large data once with corral.share(data) and pass the handle as "
            "an argument instead (read it with handle.value in the task)."
        )

    def arguments(
        self,
        batch: Any,
        items: list[Any],
        star: bool,
        encoded: int,
        name_item: Callable[[int], str],
    ) -> None:
        """``encoded``: the size of the pickled Call of ``items`` less its functions' bytes.
        ``name_item(offset)`` names the task of item ``offset`` (for the message)."""
        if encoded <= WARN_BYTES or self._argument_warned or batch in self._searched:
            return
        self._searched.add(batch)
        offset, label, size = _biggest_argument(items, star)
        if size <= WARN_BYTES:
            return  # many medium arguments in one chunk: nothing to name
        self._argument_warned = True
        what = f"{label} of {name_item(offset)}" if label else name_item(offset)
        _warn(
            f"corral: {what} pickles to {human_size(size)}: arguments are pickled and copied "
            "for every task (and every retry). Share large data once with corral.share(data) "
            "and pass the handle instead (read it with handle.value in the task). "
            "(Warned once per Pool.)"
        )


def _biggest_argument(items: list[Any], star: bool) -> tuple[int, str, int]:
    """``(offset, label, size)`` of the argument among ``items`` that pickles biggest; label
    is "" for a ``map`` item (the item is the argument), else names the argument of a Task."""
    best = (-1, "", 0)
    for offset, item in enumerate(items):
        if star:
            _, args, kwargs = item
            parts = [(f"argument {i}", a) for i, a in enumerate(args)]
            parts += [(f"argument {k!r}", v) for k, v in kwargs.items()]
        else:
            parts = [("", item)]
        for label, value in parts:
            try:
                size = len(dumps(value))
            except Exception:  # reported as its task's SerializationError elsewhere
                continue
            if size > best[2]:
                best = (offset, label, size)
    return best


def _function_name(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(type(fn), "__qualname__", None)
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module and name else repr(fn)[:80]


_HERE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _warn(message: str) -> None:
    """A RuntimeWarning attributed to the first frame outside corral: the caller's line."""
    level, frame = 1, sys._getframe(0)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_HERE):
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    warnings.warn(message, RuntimeWarning, stacklevel=level)


def portable(wrapped: ExceptionWithTraceback) -> ExceptionWithTraceback:
    """``wrapped`` if its exception survives the trip to the coordinator (pickled and
    unpickled here), else the same failure as a ``RemoteError``: corral's one "pickle or fall
    back". Its pickling may raise anything, SystemExit included."""
    try:
        loads(dumps(wrapped))
    except BaseException:
        return wrapped.fallback()
    return wrapped


def human_size(n: int) -> str:
    """The one byte-size formatter of corral's messages: ``512 bytes``, ``3.0 GiB``."""
    if n < 1024:
        return f"{n} bytes"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024 or unit == "TiB":
            break
    return f"{size:.1f} {unit}"


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
