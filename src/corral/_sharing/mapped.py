"""A file the user already has, shared in place: ``corral.share(np.load(path, mmap_mode="r"))``.

    owner (the coordinator)                          any process (workers, the owner itself)
    ───────────────────────                          ───────────────────────────────────────
    share(memmap): file_of() finds the file, the     attach: open the file read-only, check
      byte offset of the array in it, and stamps       its stamp (size, mtime, inode): a
      it (size, mtime, inode); nothing is copied       changed or missing file is a
      and nothing is created                           CorralError, never other data
    release(): the handle stops travelling; the      read(): an ndarray over a read-only
      file is the user's and is never removed          mapping of the file (PROT_READ)

Nothing is copied: every process maps the same file, whose page cache holds the one copy of the
data (for a file in /dev/shm, its pages are that copy). The file is the user's: corral never
creates, fills or unlinks it, so there is nothing to leak and nothing for the sweep to find.

The stamp is checked when a process maps the file (once per process, like any share): a change
after that moment is not seen, and a file truncated under a mapping makes reads beyond its end
fault (SIGBUS), as for any memory-mapped file: do not modify or truncate it while shared.
Modification times are as fine as the filesystem keeps them (a rewrite of the same size
within one clock tick keeps the stamp); ``os.replace`` of a new file changes the inode.
"""

from __future__ import annotations

import mmap
import os
import sys
from typing import Any, NamedTuple

from .._errors import ConfigError, CorralError


class FileStamp(NamedTuple):
    """Where the array is in a user's file, and the file as it was when shared; what a
    handle of a file share carries between processes (with the file's path and size)."""

    name: str
    """The share's own name (``corral-<pid>-<start>-<token>``): the file's is not unique."""
    offset: int
    dtype: Any
    shape: tuple[int, ...]
    fortran: bool
    mtime_ns: int
    ino: int
    """(Not the device number: a filesystem mounted on several hosts has one per host.)"""


def file_of(obj: Any) -> tuple[str, int, FileStamp] | None:
    """``(path, file size, stamp)`` when ``obj`` is a read-only ``numpy.memmap`` (``np.load(
    path, mmap_mode="r")``, ``np.memmap(path, mode="r")``, or a contiguous slice of one) that
    can be shared by mapping its file again; None for anything else, which is copied. The
    stamp's ``name`` is left for the caller to give.

    Modes ``"r+"`` and ``"w+"`` (the owner may write while tasks read) and ``"c"``
    (copy-on-write: the owner's changes are not in the file) are copied like any array."""
    np = sys.modules.get("numpy")
    if np is None or not isinstance(obj, np.memmap):
        return None
    mm = getattr(obj, "_mmap", None)  # set by np.memmap, kept by views of the same pages
    if mm is None or getattr(obj, "mode", None) != "r" or not getattr(obj, "filename", None):
        return None
    if obj.size == 0 or obj.dtype.hasobject or obj.dtype.itemsize == 0:
        return None
    if obj.flags.c_contiguous:
        fortran = False
    elif obj.flags.f_contiguous:
        fortran = True
    else:
        return None  # strided: copied into a segment, C-ordered
    # np.memmap maps the file from ``offset`` rounded down to the allocation granularity;
    # the array's first byte is that far into the mapping.
    start = obj.offset - obj.offset % mmap.ALLOCATIONGRANULARITY
    base = np.frombuffer(mm, np.uint8).ctypes.data
    offset = start + obj.ctypes.data - base
    path = os.fspath(obj.filename)
    st = os.stat(path)
    if offset + obj.nbytes > st.st_size:
        raise ConfigError(
            f"cannot share the memory-mapped array of {path}: the file is shorter "
            f"({st.st_size} bytes) than the array it maps (changed since it was loaded?)"
        )
    stamp = FileStamp("", offset, obj.dtype, tuple(obj.shape), fortran, st.st_mtime_ns, st.st_ino)
    return path, st.st_size, stamp


def attach(path: str, size: int, stamp: FileStamp) -> mmap.mmap:
    """Map the file read-only after checking that it is still the file that was shared."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise CorralError(
            f"shared file {path} is gone: it was removed or renamed after "
            "corral.share(np.load(..., mmap_mode='r')); keep it in place while it is shared"
        ) from None
    try:
        st = os.fstat(fd)
        was = (size, stamp.mtime_ns, stamp.ino)
        now = (st.st_size, st.st_mtime_ns, st.st_ino)
        if now != was:
            what = [
                label
                for label, a, b in zip(("size", "mtime", "inode"), was, now, strict=True)
                if a != b
            ]
            raise CorralError(
                f"shared file {path} changed after it was shared ({', '.join(what)} differ): "
                "a file shared in place must not be modified; share it again after changing it"
            )
        return mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)


def read(mapping: mmap.mmap, stamp: FileStamp) -> Any:
    """The shared array: a view of the read-only mapping (its ``writeable`` flag cannot be
    set), in the file's own order (a Fortran-ordered ``.npy`` stays Fortran-ordered)."""
    import numpy as np

    return np.ndarray(
        stamp.shape,
        stamp.dtype,
        buffer=mapping,
        offset=stamp.offset,
        order="F" if stamp.fortran else "C",
    )


def describe(obj: Any, path: str) -> str:
    return f"ndarray {obj.dtype} {tuple(obj.shape)} mapped from {os.path.basename(path)}"
