"""How a shared object is laid out in a segment, and rebuilt from it as read-only views.

A segment holds a small header (a pickled tree of *nodes*) followed by the data buffers, each
aligned to 64 bytes::

    [ magic 8 | header length 8 | header (pickle of the node tree) | pad | buffer | buffer ... ]

``layout_of`` walks the object once and returns the tree and the *pieces* to copy (offset, size and
how to write them); ``write`` copies them into a writable mapping; ``rebuild`` turns the tree
back into objects whose every large buffer is a view of the (read-only) mapping, so nothing is
copied and any write raises.

What travels how:

- numpy arrays (no object dtype): raw bytes, C order;
- ``bytes``, ``bytearray``, ``memoryview``: raw bytes, rebuilt as a read-only ``memoryview``;
- pandas Series and DataFrame: each column by its kind: numeric, bool and naive datetime or
  timedelta columns as numpy buffers, categorical as codes plus categories, tz-aware datetime as
  its int64 UTC values, nullable (``Int64``, ``Float64``, ``boolean``) as values plus mask,
  strings and Arrow-backed columns as an Arrow IPC stream (needs pyarrow); a frame whose columns
  all share one numpy dtype as a single 2-D block. A RangeIndex is three numbers; other
  indexes are encoded like columns, or pickled into the header if they cannot be;
- dict, list, tuple of these, and small scalars (None, bool, int, float, complex, str), which
  go into the header.

numpy, pandas and pyarrow are imported only when an object needs them.
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._errors import ConfigError

MAGIC = b"CORRAL1\0"
ALIGN = 64
Node = tuple[Any, ...]
SCALARS = (type(None), bool, int, float, complex, str)


@dataclass
class Piece:
    """One buffer to copy into the segment: ``write`` fills ``size`` bytes at ``offset``."""

    offset: int
    size: int
    write: Callable[[memoryview], None]
    source: memoryview | None = None  # the bytes to copy, when they are one contiguous buffer


@dataclass
class Layout:
    tree: Node
    header: bytes
    data_start: int
    size: int
    pieces: list[Piece] = field(default_factory=list)


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def layout_of(obj: Any) -> Layout:
    """The layout of ``obj``; a ``ConfigError`` naming the part that cannot be shared."""
    planner = _Planner()
    tree = planner.node(obj, "the object")
    header = pickle.dumps(tree, protocol=pickle.HIGHEST_PROTOCOL)
    data_start = _align(16 + len(header))
    for piece in planner.pieces:
        piece.offset += data_start
    return Layout(tree, header, data_start, data_start + planner.size, planner.pieces)


def empty_layout(shape: tuple[int, ...], dtype: Any) -> Layout:
    """The layout of a new zero-filled array (the reserved pages are zero; nothing to copy)."""
    size = dtype.itemsize
    for n in shape:
        size *= n
    tree = ("nd", 0, dtype, shape)
    header = pickle.dumps(tree, protocol=pickle.HIGHEST_PROTOCOL)
    data_start = _align(16 + len(header))
    return Layout(tree, header, data_start, data_start + size)


def write(layout: Layout, mapping: memoryview) -> None:
    """Copy the header and every piece into a writable mapping of ``layout.size`` bytes."""
    mapping[:8] = MAGIC
    mapping[8:16] = struct.pack("<Q", len(layout.header))
    mapping[16 : 16 + len(layout.header)] = layout.header
    for piece in layout.pieces:
        piece.write(mapping[piece.offset : piece.offset + piece.size])


def file_writable(layout: Layout) -> bool:
    """Whether every piece has its bytes in one buffer (``write_file`` can copy it)."""
    return all(piece.source is not None for piece in layout.pieces)


PWRITE_STEP = 64 << 20
"""Bytes per ``pwrite``: large enough to run at memory bandwidth, well below Linux's 2 GiB
limit of one call."""


def write_file(layout: Layout, fd: int) -> None:
    """Write the header and every piece into the file ``fd`` (``file_writable`` layouts).

    One sequential copy at memory bandwidth: on tmpfs, ``pwrite`` allocates each page and
    fills it in one pass, where reserving (``posix_fallocate``: zeroed pages), mapping and
    copying through the mapping touches every page three times. Running out of space is an
    ``OSError`` (ENOSPC) here, never the SIGBUS a mapping would raise."""
    head = MAGIC + struct.pack("<Q", len(layout.header)) + layout.header
    _pwrite_all(fd, memoryview(head), 0)
    for piece in layout.pieces:
        assert piece.source is not None
        _pwrite_all(fd, piece.source, piece.offset)
    os.ftruncate(fd, max(layout.size, 1))  # the padding after the last piece, as zeros


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    done = 0
    while done < data.nbytes:
        done += os.pwrite(fd, data[done : done + PWRITE_STEP], offset + done)


def read(mapping: memoryview) -> Any:
    """Rebuild the object from a mapping (read-only for workers), zero-copy."""
    if bytes(mapping[:8]) != MAGIC:
        raise ValueError("not a corral shared segment (bad magic)")
    (length,) = struct.unpack("<Q", mapping[8:16])
    tree = pickle.loads(mapping[16 : 16 + length])
    data = mapping[_align(16 + length) :]
    return _rebuild(tree, data)


def describe(obj: Any) -> str:
    """A short description for reprs: ``ndarray float64 (1000, 3)``, ``DataFrame 10x4``."""
    name = type(obj).__name__
    shape = getattr(obj, "shape", None)
    if name in ("ndarray", "memmap"):
        return f"ndarray {obj.dtype} {tuple(shape) if shape is not None else ''}"
    if name == "DataFrame" and shape is not None:
        return f"DataFrame {shape[0]}x{shape[1]}"
    if name == "Series":
        return f"Series {obj.dtype} ({len(obj)})"
    if isinstance(obj, (dict, list, tuple)):
        return f"{name} of {len(obj)}"
    return name


# -- planning --------------------------------------------------------------------------------


class _Planner:
    def __init__(self) -> None:
        self.pieces: list[Piece] = []
        self.size = 0

    def buffer(
        self, size: int, write: Callable[[memoryview], None], source: memoryview | None = None
    ) -> int:
        """Reserve ``size`` bytes for a buffer; its offset from the start of the data.
        ``source``: its bytes, when contiguous (``write_file`` copies them with ``pwrite``)."""
        offset = _align(self.size)
        self.size = offset + size
        self.pieces.append(Piece(offset, size, write, source))
        return offset

    def node(self, obj: Any, where: str) -> Node:
        if isinstance(obj, SCALARS):
            return ("obj", obj)
        if isinstance(obj, (bytes, bytearray, memoryview)):
            return self.raw(memoryview(obj).cast("B"))
        if isinstance(obj, dict):
            return ("dict", [(k, self.node(v, f"{where}[{k!r}]")) for k, v in obj.items()])
        if isinstance(obj, (list, tuple)):
            kids = [self.node(v, f"{where}[{i}]") for i, v in enumerate(obj)]
            return ("list" if isinstance(obj, list) else "tuple", kids)
        np = sys.modules.get("numpy")
        if np is not None and isinstance(obj, np.ndarray):
            return self.array(obj, where)
        pd = sys.modules.get("pandas")
        if pd is not None and isinstance(obj, pd.DataFrame):
            return self.frame(obj, where)
        if pd is not None and isinstance(obj, pd.Series):
            values = self.column(obj, where)
            return ("series", values, self.index(obj.index, where), obj.name)
        raise ConfigError(
            f"corral.share cannot share {where}, a {type(obj).__module__}.{type(obj).__name__}: "
            "it takes numpy arrays, pandas DataFrames and Series, bytes, and dicts, lists "
            "and tuples of these"
        )

    def raw(self, view: memoryview) -> Node:
        def copy(dst: memoryview) -> None:
            dst[:] = view

        return ("bytes", self.buffer(view.nbytes, copy, view), view.nbytes)

    def array(self, arr: Any, where: str) -> Node:
        import numpy as np

        if arr.dtype.hasobject:
            raise ConfigError(
                f"corral.share cannot share {where}: a numpy array of dtype {arr.dtype} holds "
                "Python objects, not data that can be mapped"
            )

        def copy(dst: memoryview) -> None:
            np.copyto(np.ndarray(arr.shape, arr.dtype, buffer=dst), arr, casting="no")

        source = None
        if arr.flags.c_contiguous:  # its bytes as they are laid out in the segment
            source = memoryview(arr.reshape(-1).view(np.uint8))
        return ("nd", self.buffer(arr.nbytes, copy, source), arr.dtype, arr.shape)

    def frame(self, df: Any, where: str) -> Node:
        import numpy as np

        index = self.index(df.index, where)
        columns = [df.iloc[:, i] for i in range(df.shape[1])]
        dtypes = {c.dtype for c in columns}
        if len(dtypes) == 1 and isinstance(next(iter(dtypes)), np.dtype) and columns:
            dtype = next(iter(dtypes))
            if not dtype.hasobject:
                return ("frame2d", self.block(columns, dtype), df.columns, index)
        kids = [self.column(c, f"{where} column {df.columns[i]!r}") for i, c in enumerate(columns)]
        return ("frame", kids, df.columns, index)

    def block(self, columns: list[Any], dtype: Any) -> Node:
        """Columns of one numpy dtype as one (columns, rows) block: pandas' own layout, so the
        rebuilt frame is a single block, as fast as the original."""
        import numpy as np

        shape = (len(columns), len(columns[0]))

        def copy(dst: memoryview) -> None:
            block = np.ndarray(shape, dtype, buffer=dst)
            for i, column in enumerate(columns):  # column by column: no frame-sized temporary
                block[i] = column.to_numpy(copy=False)

        size = shape[0] * shape[1] * dtype.itemsize
        return ("nd", self.buffer(size, copy), dtype, shape)

    def column(self, series: Any, where: str) -> Node:
        import numpy as np
        import pandas as pd

        dtype = series.dtype
        arr = series.array
        if isinstance(dtype, pd.CategoricalDtype):
            codes = self.array(np.asarray(arr.codes), where)
            return ("cat", codes, self.index(arr.categories, where), dtype.ordered)
        if isinstance(dtype, pd.DatetimeTZDtype):
            return ("tz", self.array(np.asarray(arr.asi8), where), dtype)
        if isinstance(
            arr, pd.arrays.IntegerArray | pd.arrays.FloatingArray | pd.arrays.BooleanArray
        ):
            data, mask = np.asarray(arr._data), np.asarray(arr._mask)  # no public accessor
            return ("masked", type(arr).__name__, self.array(data, where), self.array(mask, where))
        if isinstance(dtype, pd.StringDtype | pd.ArrowDtype):
            return self.arrow(series, dtype, where)
        if isinstance(dtype, np.dtype) and dtype.kind == "O":
            return self.arrow(series, None, where)
        if isinstance(dtype, np.dtype):
            return self.array(series.to_numpy(copy=False), where)
        raise ConfigError(
            f"corral.share cannot share {where}, of dtype {dtype}: it takes numeric, bool, "
            "datetime, timedelta, categorical, nullable and string columns"
        )

    def arrow(self, series: Any, dtype: Any, where: str) -> Node:
        try:
            import pyarrow as pa
        except ImportError:
            raise ConfigError(
                f"corral.share cannot share {where}: string columns travel as Arrow data and "
                "need pyarrow (pip install pyarrow); or convert the column to 'category'"
            ) from None
        if dtype is None or not hasattr(series.array, "__arrow_array__"):
            try:
                values = series.to_numpy(dtype=object)
                arr = pa.array(values, type=pa.large_string(), from_pandas=True)
            except (pa.ArrowException, TypeError, ValueError) as exc:
                raise ConfigError(
                    f"corral.share cannot share {where}: an object column must hold only "
                    f"strings (and missing values) to be shared ({exc})"
                ) from None
        else:
            arr = pa.chunked_array(pa.array(series.array)).combine_chunks()
        stream = _arrow_stream(arr)

        def copy(dst: memoryview) -> None:
            dst[:] = memoryview(stream).cast("B")

        source = memoryview(stream).cast("B")
        return ("arrow", self.buffer(stream.size, copy, source), stream.size, dtype)

    def index(self, index: Any, where: str) -> Node:
        import pandas as pd

        if isinstance(index, pd.RangeIndex):
            return ("range", index.start, index.stop, index.step, index.name)
        if not isinstance(index, pd.MultiIndex):
            try:
                values = self.column(pd.Series(index, copy=False), where)
                as_object = index.dtype == object  # strings in pandas < 3: kept as they were
                return ("index", values, index.name, getattr(index, "freq", None), as_object)
            except ConfigError:
                pass
        return ("obj", index)  # small or exotic: pickled into the header, copied per process


def _arrow_stream(arr: Any) -> Any:
    import pyarrow as pa

    batch = pa.record_batch([arr], names=["v"])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue()


# -- rebuilding ------------------------------------------------------------------------------


def _rebuild(node: Node, data: memoryview) -> Any:
    """``node`` as an object whose buffers are views of ``data`` (offsets are from its start)."""
    kind = node[0]
    if kind == "obj":
        return node[1]
    if kind == "bytes":
        _, offset, size = node
        return data[offset : offset + size]
    if kind == "nd":
        import numpy as np

        _, offset, dtype, shape = node
        return np.ndarray(shape, dtype, buffer=data, offset=offset)
    if kind == "dict":
        return {k: _rebuild(v, data) for k, v in node[1]}
    if kind in ("list", "tuple"):
        kids = [_rebuild(v, data) for v in node[1]]
        return kids if kind == "list" else tuple(kids)
    return _PANDAS[kind](node, data)


def _series(node: Node, data: memoryview) -> Any:
    import pandas as pd

    _, values, index, name = node
    return pd.Series(_rebuild(values, data), index=_rebuild(index, data), name=name, copy=False)


def _frame(node: Node, data: memoryview) -> Any:
    import pandas as pd

    _, kids, columns, index = node
    arrays = {i: _rebuild(kid, data) for i, kid in enumerate(kids)}
    # copy=False keeps one block per column: pandas would otherwise consolidate (copy) them.
    df = pd.DataFrame(arrays, index=_rebuild(index, data), copy=False)
    df.columns = columns
    return df


def _frame2d(node: Node, data: memoryview) -> Any:
    import pandas as pd

    _, block, columns, index = node
    values = _rebuild(block, data).T  # (rows, columns), Fortran order: pandas' layout
    return pd.DataFrame(values, index=_rebuild(index, data), columns=columns, copy=False)


def _categorical(node: Node, data: memoryview) -> Any:
    import pandas as pd

    _, codes, categories, ordered = node
    dtype = pd.CategoricalDtype(_rebuild(categories, data), ordered=ordered)
    return pd.Categorical.from_codes(_rebuild(codes, data), dtype=dtype, validate=False)


def _tz(node: Node, data: memoryview) -> Any:
    import pandas as pd

    _, values, dtype = node
    utc = _rebuild(values, data).view(f"M8[{dtype.unit}]")
    try:  # the zero-copy constructor is private; the public road copies
        return pd.arrays.DatetimeArray._simple_new(utc, dtype=dtype)
    except (AttributeError, TypeError):  # pragma: no cover - older or newer pandas
        return pd.array(utc).tz_localize("UTC").tz_convert(dtype.tz)


def _masked(node: Node, data: memoryview) -> Any:
    import pandas as pd

    _, cls, values, mask = node
    return getattr(pd.arrays, cls)(_rebuild(values, data), _rebuild(mask, data))


def _arrow(node: Node, data: memoryview) -> Any:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    _, offset, size, dtype = node
    stream = pa.py_buffer(data[offset : offset + size])
    arr = pa.ipc.open_stream(stream).read_next_batch().column(0)
    if isinstance(dtype, pd.ArrowDtype):
        return pd.arrays.ArrowExtensionArray(pa.chunked_array([arr]))
    if dtype is None:  # an object column of strings: pandas' own string dtype
        try:
            dtype = pd.StringDtype("pyarrow", na_value=np.nan)
        except TypeError:  # pragma: no cover - pandas < 2.1
            dtype = pd.StringDtype("pyarrow")
    elif dtype.storage != "pyarrow":
        dtype = pd.StringDtype("pyarrow", na_value=dtype.na_value)
    return pd.array(arr, dtype=dtype)


def _range(node: Node, data: memoryview) -> Any:
    import pandas as pd

    _, start, stop, step, name = node
    return pd.RangeIndex(start, stop, step, name=name)


def _index(node: Node, data: memoryview) -> Any:
    import pandas as pd

    _, values, name, freq, as_object = node
    if as_object:  # an object index of strings (pandas < 3): rebuilt as one, which copies
        index = pd.Index(_rebuild(values, data), name=name, dtype=object)
    else:
        index = pd.Index(_rebuild(values, data), name=name, copy=False)
    if freq is not None:  # a date_range's frequency (validated against the values, not copied)
        index = type(index)(index, freq=freq)
    return index


_PANDAS: dict[str, Callable[[Node, memoryview], Any]] = {
    "series": _series,
    "frame": _frame,
    "frame2d": _frame2d,
    "cat": _categorical,
    "tz": _tz,
    "masked": _masked,
    "arrow": _arrow,
    "range": _range,
    "index": _index,
}
