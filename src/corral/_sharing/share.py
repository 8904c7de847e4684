"""``corral.share``: large read-only data for tasks, copied once into shared memory — or not
at all, for workers forked after the share.

    coordinator (the owner)                            worker process (any number)
    ───────────────────────                            ───────────────────────────
    share(obj): lay out (_sharing.layout), check space,
      name the segment; an array or bytes is kept
      in place, anything else is copied now into
      the segment (_sharing.segments)
      ──► a Shared handle: path, size (~200 bytes)
    the handle, pickled inside task arguments ═══════► unpickled: a Shared handle again
      (unless every open Pool forks its workers        handle.value, once per process:
      after the share, the segment is made and         - forked after the share: a read-only
      filled now, if it was not yet)                     view of the inherited original
                                                       - otherwise: attach the segment
                                                         (read-only mapping), rebuild
                                                         zero-copy views; cached
                                                       never unlinks; its mapping (and the
                                                         memory) goes when its views do
    release() / end of with / last handle collected /
      interpreter exit / SIGTERM, SIGHUP ──► unlink
    next Pool or share() in any process ──► sweep segments whose owner died (SIGKILL)

Ownership rule. The process that called ``share`` owns the segment and is the only one that
unlinks it. A share lives as long as its owner holds it: it is released by the first of
``handle.release()``; the end of ``with corral.share(x) as h:``; the garbage collection of the
last handle in this process (a ``weakref.finalize``; copies unpickled here are other objects
and do not keep it); the interpreter exiting (the same finalizer, run at exit) or being ended
by SIGTERM or SIGHUP (``_signals.die``). Pools never release a share: one handle serves any
number of runs, and ``corral.map(f, [(corral.share(x), i) ...])`` releases it when the item
list (and with it the handle) is dropped. Workers never unlink, so a worker crash cannot lose
or leak a segment.

Fork inheritance. ``share(array)`` (C-contiguous), ``share(bytes)``, or ``share(df)`` of a
DataFrame or Series whose columns are plain numpy data (``PLAIN_KINDS``) keeps a reference to
the original in the owner's record and creates no segment yet. A worker forked from the owner after
the share has that record, and the original, in its memory (copy-on-write), as mpire's
``shared_objects`` do: it reads a read-only view of it, and nothing is copied. The segment is
made only when the handle is pickled while some open Pool cannot inherit (forkserver or spawn,
a fork Pool started before the share, a Pool still starting, or no Pool at all: a destination
we do not know); from then on the record drops the original and every reader maps the
segment. A process that has neither the inherited record nor the segment gets a
``CorralError``, never missing data. Ticks (``_lifecycle.tick``) order shares and Pool
starts: a Pool's ``born`` is taken before it forks a worker, a share's once its record is in
``_owned``, so a Pool born later has workers that hold the record.

Files in place. A read-only ``numpy.memmap`` (``np.load(path, mmap_mode="r")``) is not copied
under any start method (``_sharing.mapped``): its handle names the user's file, with a stamp
that every process checks when it maps the file again; its record has nothing pending and
nothing to unlink (``segments.unlink`` never removes a user's file), so releasing it only
stops the handle from travelling. ``_attached`` is keyed by ``Segment.key``: two shares of
one file are two entries.

State: ``_owned`` (shares this process made; in a forked worker, the inherited ones) and
``_attached`` (values this process has built) are per-process registries, like
``_lifecycle``'s live pools: one attachment per process is the point of the cache. Both are
guarded by ``_lock``, which a forked child gets anew (its parent's may have been held by
another thread at the fork).
"""

from __future__ import annotations

import mmap
import os
import socket
import sys
import threading
import weakref
from dataclasses import dataclass
from typing import Any

from .. import _lifecycle
from .._codec import human_size
from .._errors import ConfigError, CorralError
from .._public import public
from . import layout as _layout
from . import mapped as _mapped
from . import segments as _shm


@dataclass
class _Owned:
    """A share this process made (or, in a forked child, inherited), and what keeps it alive."""

    segment: _shm.Segment
    pid: int
    born: int = 0
    released: bool = False
    writable: mmap.mmap | None = None
    pending: _layout.Layout | None = None
    """How to fill the segment, while it is not made yet; None once it exists."""
    source: Any = None
    """The original, while no segment holds it: read in place here and in processes forked
    from here after the share."""


HOST = socket.gethostname()
"""This machine, as the handles made here name it."""

_lock = threading.RLock()


def _new_lock_in_child() -> None:
    # Another thread of the parent (an engine thread filling a segment) may hold the lock at
    # the fork; in the child that thread does not exist and would never release it.
    global _lock
    _lock = threading.RLock()


os.register_at_fork(after_in_child=_new_lock_in_child)

_owned: dict[str, _Owned] = {}
_attached: dict[str, Any] = {}
"""Segment path -> the value rebuilt from it in this process."""
_attaches = 0
"""How many times this process mapped a segment (tests check that a worker maps it once)."""


@public
class Shared:
    """A handle on data in shared memory, made by ``corral.share``.

    Pass it in task arguments (it pickles to a few hundred bytes); read the data with
    ``handle.value`` in the task. ``value`` is a read-only, zero-copy view, built once per
    process and cached: the first task in each worker maps the segment (or, in a worker forked
    after the share, views the inherited original), later tasks get the same object. Writing
    to it raises.

    Example::

        with corral.share(features) as table:          # a DataFrame, copied once
            scores = corral.map(evaluate, [(table, spec) for spec in specs])

        def evaluate(args):
            table, spec = args
            df = table.value                           # no copy, read-only
            ...
    """

    __slots__ = ("__weakref__", "_host", "_segment", "_summary")

    def __init__(self, segment: _shm.Segment, summary: str, host: str | None = None) -> None:
        self._segment = segment
        self._summary = summary
        self._host = host or HOST  # where the segment was made (a Dask worker may be elsewhere)

    @classmethod
    def empty(
        cls,
        shape: int | tuple[int, ...],
        dtype: Any = "float64",
        *,
        backing: str = "shm",
        dir: str | os.PathLike[str] | None = None,
    ) -> Shared:
        """A new zero-filled numpy array in shared memory, to fill in place before use:
        unlike ``share(array)``, the data never exists twice. It lives, like any share, until
        ``release()``, the end of its ``with`` block, its collection, or exit.

        Example::

            h = corral.Shared.empty((n, 3))
            h.writable()[:] = load_rows()               # fill it here, then send h to tasks
        """
        import numpy as np

        dims = (shape,) if isinstance(shape, int) else tuple(shape)
        dt = np.dtype(dtype)
        if dt.hasobject:
            raise ConfigError(f"Shared.empty needs a plain dtype, not {dt}")
        layout = _layout.empty_layout(dims, dt)
        return _create_writable(layout, f"ndarray {dt} {dims}", backing, dir)

    # -- reading --------------------------------------------------------------------------
    @property
    def value(self) -> Any:
        """The shared object: read-only, zero-copy views, cached per process."""
        with _lock:
            record = _owned.get(self._segment.name)
            if record is not None and record.pid == os.getpid() and record.released:
                raise CorralError(f"{self!r} was released; it cannot be read any more")
            cached = _attached.get(self._segment.key, _MISSING)
            if cached is not _MISSING:
                return cached
            if record is not None and record.source is not None and not record.released:
                # The owner, or a process forked from it after the share: the original is in
                # this process's memory (as it was at the fork).
                value = _read_only(record.source)
                _attached[self._segment.key] = value
                return value
            return _attach(self._segment, self._host)

    def writable(self) -> Any:
        """A writable array over the segment made by ``Shared.empty``, in the process that
        made it: fill the data in place, then hand the handle to tasks."""
        record = _own_record(self, "write to")
        if record.writable is None:
            raise CorralError("writable() is for handles made by corral.Shared.empty")
        return _layout.read(memoryview(record.writable))

    @property
    def nbytes(self) -> int:
        """The segment's size: the data, plus a header and alignment (for a file shared in
        place, the file's size)."""
        return self._segment.size

    @property
    def name(self) -> str:
        return self._segment.name

    @property
    def path(self) -> str:
        return self._segment.path

    # -- lifetime ---------------------------------------------------------------------------
    def release(self) -> None:
        """Unlink the segment now (in the process that created it; idempotent).

        Views already handed out stay valid until they are dropped; new ``value`` reads, and
        tasks that have not read it yet, fail with ``CorralError``."""
        _own_record(self, "release")
        _release(self._segment.name)

    def __enter__(self) -> Shared:
        _own_record(self, "use in a with block")  # only the owner can release it at the end
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    # -- travel -----------------------------------------------------------------------------
    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled on an engine thread while another thread may close a Pool: locked.
        with _lock:
            record = _owned.get(self._segment.name)
            if record is not None and record.pid == os.getpid():
                if record.released:
                    raise CorralError(
                        f"{self!r} was released (by release() or the end of its with block); "
                        "release a share only after the last run that uses it"
                    )
                pools = _lifecycle.live()  # every Pool open now may be the destination
                if record.pending is not None and not _inherited_by(record, pools):
                    _materialize(record)
        return (
            _rebuild_handle,
            (self._segment.path, self._segment.size, self._summary, self._host, self._segment.file),
        )

    def __repr__(self) -> str:
        return f"<corral.Shared {self._segment.name} {self._summary}, {human_size(self.nbytes)}>"


_MISSING = object()


def _rebuild_handle(
    path: str, size: int, summary: str, host: str | None = None, file: Any = None
) -> Shared:
    return Shared(_shm.Segment(path, size, file), summary, host)


@public
def share(
    obj: Any,
    *,
    backing: str = "shm",
    dir: str | os.PathLike[str] | None = None,
) -> Shared:
    """Copy ``obj`` once into shared memory; a small handle that tasks read it through.

    ``obj`` is a numpy array, a pandas DataFrame or Series (numeric, bool, datetime,
    timedelta, categorical, nullable and string columns; strings need pyarrow), ``bytes``, or
    a dict, list or tuple of these. In a task, ``handle.value`` is a read-only zero-copy view
    (a ``memoryview`` for bytes), mapped once per worker process.

    A C-contiguous numpy array, ``bytes``, or a DataFrame or Series whose columns are all
    numeric, bool, datetime64 or timedelta64 is not copied at all while every Pool it is sent
    to forks its workers after this call (``start_method="fork"``): they read the original
    they inherited, copy-on-write, as it was when they were forked. It is copied into shared
    memory the first time it is sent while another kind of Pool is open. Either way, do not
    modify ``obj`` after sharing it: what tasks would see of a change is undefined.

    A read-only memory-mapped array (``np.load(path, mmap_mode="r")``, contiguous) is never
    copied, under any start method: every process maps the same file, checked (size,
    modification time, inode) when it maps it; a changed or missing file is a ``CorralError``.

    ``backing="shm"`` (default) puts it in ``/dev/shm``; ``backing="file", dir=...`` in a
    memory-mapped file, for data larger than ``/dev/shm``. Free space is checked, and the
    space reserved, before anything is copied: a share that does not fit raises
    ``corral.ConfigError``.

    Lifetime: a share lives as long as you hold it, across any number of runs: until
    ``h.release()``, the end of ``with corral.share(x) as h:``, the garbage collection of the
    handle, or interpreter exit.
    """
    if isinstance(obj, Shared):
        return obj
    in_place = _mapped.file_of(obj)
    if in_place is not None:  # a read-only memory-mapped file: mapped again, never copied
        path, size, stamp = in_place
        segment = _shm.Segment(path, size, stamp._replace(name=_shm.new_name()))
        return _register(segment, _mapped.describe(obj, path))
    layout = _layout.layout_of(obj)
    folder = _shm.backing_dir(backing, dir)
    _shm.sweep(tuple({*_shm.default_folders(), folder}))
    _shm.check_space(folder, layout.size)
    segment = _shm.Segment(os.path.join(folder, _shm.new_name()), layout.size)
    record = _Owned(segment, os.getpid(), pending=layout)
    if _inheritable(obj):
        record.source = obj
    with _lock:
        _owned[segment.name] = record  # from here on, exit handlers unlink it
        record.born = _lifecycle.tick()  # a Pool born later forks workers that have it
    if record.source is None:
        try:
            _materialize(record)
        except BaseException:
            _release(segment.name)
            raise
    handle = Shared(segment, _layout.describe(obj))
    weakref.finalize(handle, _release, segment.name)
    return handle


def _register(segment: _shm.Segment, summary: str) -> Shared:
    """A share of a user's file in place (``_sharing.mapped``): nothing to make or fill, but a
    record all the same, so that ``release``, ``with`` and the travel rules hold as for any
    share (releasing it never removes the file)."""
    record = _Owned(segment, os.getpid())
    with _lock:
        _owned[segment.name] = record
        record.born = _lifecycle.tick()
    handle = Shared(segment, summary)
    weakref.finalize(handle, _release, segment.name)
    return handle


def _inheritable(obj: Any) -> bool:
    """Whether ``obj`` can be read in place as ``value`` would read its segment: ``bytes``, a
    C-contiguous numpy array (``value`` is always C-ordered; ``layout_of`` refused object dtypes),
    or a pandas DataFrame or Series whose columns are all plain numpy data (see
    ``_plain_frame``). Mutable buffers (bytearray, memoryview) are copied at once."""
    if type(obj) is bytes:
        return True
    np = sys.modules.get("numpy")
    if np is not None and isinstance(obj, np.ndarray):
        return bool(obj.flags.c_contiguous) and obj.dtype.itemsize > 0  # a view needs bytes
    return _plain_frame(obj)


PLAIN_KINDS = "biufcmM"
"""numpy dtype kinds a column (or an index) may have to be inherited: bool, integers,
floats, complex, datetime64 and timedelta64, which the segment keeps as plain numpy buffers
too. Others (categorical, tz-aware, nullable, strings, objects) are rebuilt differently from
a segment (their own layouts, Arrow for strings): reading them in place would give another
object than a segment gives, so they take the segment."""


def _plain_frame(obj: Any) -> bool:
    pd = sys.modules.get("pandas")
    if pd is None:
        return False
    if isinstance(obj, pd.Series):
        dtypes = [obj.dtype]
    elif isinstance(obj, pd.DataFrame):
        dtypes = list(obj.dtypes)
    else:
        return False
    import numpy as np

    return all(isinstance(d, np.dtype) and d.kind in PLAIN_KINDS for d in dtypes)


def _read_only(obj: Any) -> Any:
    """A read-only zero-copy view of an original kept in place, of the same type as ``value``
    over a segment. The array view sits on a read-only buffer, so that, as over a read-only
    mapping, its ``writeable`` flag cannot be turned back on."""
    if isinstance(obj, bytes):
        return memoryview(obj)
    np = sys.modules["numpy"]  # an array or a frame: numpy is there
    if isinstance(obj, np.ndarray):
        flat = memoryview(obj.reshape(-1).view(np.uint8)).toreadonly()
        return np.frombuffer(flat, obj.dtype, count=obj.size).reshape(obj.shape)
    return _frame_view(obj)


def _array_view(arr: Any) -> Any:
    """``arr`` (any strides) seen through a read-only buffer: the same memory, never writable.
    datetime64 and timedelta64 cannot be exported as buffers: they go as int64 and back."""
    import numpy as np

    plain = arr.view("i8") if arr.dtype.kind in "mM" else arr
    view = np.asarray(memoryview(plain).toreadonly())
    return view.view(arr.dtype) if view.dtype != arr.dtype else view


def _frame_view(obj: Any) -> Any:
    """A Series or DataFrame over read-only views of the original's columns, built like the
    segment's (``_sharing.layout``): a frame of one numpy block stays one block (so pandas never
    consolidates it, which would copy it), other frames get one block per column."""
    import pandas as pd

    index = _index_view(obj.index)
    if isinstance(obj, pd.Series):
        values = _array_view(obj.to_numpy(copy=False))
        return pd.Series(values, index=index, name=obj.name, copy=False)
    if obj.shape[1] and _one_block(obj):
        values = _array_view(obj.to_numpy(copy=False))  # one block: a view, not a copy
        return pd.DataFrame(values, index=index, columns=obj.columns, copy=False)
    columns = {i: _array_view(obj.iloc[:, i].to_numpy(copy=False)) for i in range(obj.shape[1])}
    frame = pd.DataFrame(columns, index=index, copy=False)
    frame.columns = obj.columns
    return frame


def _one_block(df: Any) -> bool:
    """Whether pandas holds ``df`` as one 2-D block (then ``to_numpy`` is a view). A private
    attribute: without it, the frame is taken column by column, which is never wrong."""
    return getattr(getattr(df, "_mgr", None), "nblocks", None) == 1


def _index_view(index: Any) -> Any:
    """A numpy-backed index as a read-only view (its frequency kept); any other index (a
    RangeIndex, strings, a MultiIndex: immutable, and not buffers a task could write to
    through a numpy array) is the original object."""
    import numpy as np
    import pandas as pd

    dtype = index.dtype
    if (
        isinstance(index, pd.RangeIndex | pd.MultiIndex)
        or not isinstance(dtype, np.dtype)
        or dtype.kind not in PLAIN_KINDS
    ):
        return index
    view = pd.Index(_array_view(index.to_numpy(copy=False)), name=index.name, copy=False)
    freq = getattr(index, "freq", None)
    return type(view)(view, freq=freq) if freq is not None else view


def _inherited_by(record: _Owned, pools: list[Any]) -> bool:
    """Whether every process the handle may be pickled for now already holds the original:
    there are open Pools, none is starting, and all fork their workers after the share."""
    if record.source is None or not pools or _lifecycle.any_starting():
        return False
    return all(
        getattr(p, "start_method", None) == "fork" and getattr(p, "born", 0) > record.born
        for p in pools
    )


def _materialize(record: _Owned) -> None:
    """Make and fill the segment of ``record`` if it is not made yet; then drop the original,
    so that the segment is the only copy this share keeps alive."""
    with _lock:
        layout = record.pending
        if layout is None or record.released:
            return
        _shm.create_filled(
            record.segment.path,
            layout.size,
            lambda view: _layout.write(layout, view),
            (lambda fd: _layout.write_file(layout, fd)) if _layout.file_writable(layout) else None,
        )
        record.pending = None
        record.source = None
        _attached.pop(record.segment.key, None)  # a view of the original: read the segment


def _create_writable(
    layout: _layout.Layout,
    summary: str,
    backing: str,
    dir: str | os.PathLike[str] | None,
) -> Shared:
    """A segment made now and kept mapped writable in this process (``Shared.empty``)."""
    folder = _shm.backing_dir(backing, dir)
    _shm.sweep(tuple({*_shm.default_folders(), folder}))
    segment, mapping = _shm.create(folder, layout.size)
    record = _Owned(segment, os.getpid())
    with _lock:
        _owned[segment.name] = record  # from here on, exit handlers unlink it
    try:
        _layout.write(layout, memoryview(mapping))
    except BaseException:
        _release(segment.name)
        raise
    record.writable = mapping
    handle = Shared(segment, summary)
    weakref.finalize(handle, _release, segment.name)
    return handle


def _own_record(handle: Shared, what: str) -> _Owned:
    record = _owned.get(handle.name)
    if record is None or record.pid != os.getpid():
        raise CorralError(f"only the process that created {handle!r} can {what} it")
    return record


def _attach(segment: _shm.Segment, host: str = "") -> Any:
    global _attaches
    _prune()
    if segment.file is not None:  # a user's file shared in place: checked, then mapped
        value = _mapped.read(_mapped.attach(segment.path, segment.size, segment.file), segment.file)
        _attaches += 1
        _attached[segment.key] = value
        return value
    try:
        mapping = _shm.attach(segment)
    except FileNotFoundError as exc:
        if host and host != HOST:  # a task on another machine (backend="dask")
            raise CorralError(
                f"shared data {segment.name} is in {os.path.dirname(segment.path)} on host "
                f"{host!r}, and this task runs on {HOST!r}, which cannot map it: share it "
                "with corral.share(obj, backing='file', dir=...) on a filesystem every node "
                "mounts, or pass the data as an argument"
            ) from None
        raise CorralError(str(exc)) from None
    _attaches += 1
    value = _layout.read(memoryview(mapping))
    _attached[segment.key] = value
    return value


def _prune() -> None:
    """Forget the views of segments that were unlinked, so that a long-lived worker does not
    keep their memory mapped (it is freed when the task's own references go too)."""
    for key in [k for k in _attached if not _still_there(k)]:
        del _attached[key]


def _still_there(key: str) -> bool:
    path, _, name = key.partition("\0")  # (a file share's key names the share: Segment.key)
    record = _owned.get(name or os.path.basename(path))
    if record is not None and record.pid == os.getpid():
        return not record.released
    if record is not None and record.source is not None and not record.released:
        return True  # inherited: the original is this process's own memory
    return os.path.exists(path)


def _release(name: str) -> None:
    """Unlink a segment this process owns (no-op for another process's, or twice)."""
    with _lock:
        record = _owned.get(name)
        if record is None or record.released or record.pid != os.getpid():
            return
        record.released = True
        record.writable = None  # unmapped when the last array over it goes
        record.pending = record.source = None  # the original is the caller's again
        _attached.pop(record.segment.key, None)
        _shm.unlink(record.segment)  # if it was ever made (never a user's file)


def release_all() -> None:
    """Unlink every segment this process owns: on SIGTERM or SIGHUP (``_signals.die``), which
    ends the process by the signal, so that the finalizers that run at a normal exit do not."""
    for name in list(_owned):
        _release(name)


def attach_count() -> int:
    return _attaches
