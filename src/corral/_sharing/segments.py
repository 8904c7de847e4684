"""Segments: named files in ``/dev/shm`` (or a chosen folder) mapped into memory, and the sweep
that removes those whose owner died.

    owner process (the coordinator)             any process (workers, the owner itself)
    ───────────────────────────────             ───────────────────────────────────────
    create(): check free space, reserve the     attach(): open the file read-only, map it
      pages (fallocate), map it writable,         (PROT_READ: a write through any view
      fill it, unmap                              faults), never unlink it
    create_filled(): the same under a
      temporary name, renamed once full
    unlink(): remove the name; pages are freed
      when the last mapping goes away
    sweep(): at every corral start, remove
      segments whose owner process is dead

A segment is a plain file, not a ``multiprocessing.shared_memory.SharedMemory``: on Python
< 3.13 every process that attaches one registers it with its own resource tracker, which then
warns about a "leak" and unlinks the segment when that process exits, under the owner's feet
(cpython gh-82300). Files opened directly have no tracker; their lifetime is ours to manage,
hence the owner's pid in every name and the sweep.

Names are ``corral-<pid>-<start>-<token>``: the owner's pid, the owner's start time in clock
ticks since boot (so that a reused pid is not mistaken for the owner), and a random token.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import sys
import tempfile
from collections.abc import Callable
from typing import NamedTuple

from .._codec import human_size
from .._errors import ConfigError
from .mapped import FileStamp

PREFIX = "corral-"
SHM_DIR = "/dev/shm"
SPACE_MARGIN = 1 << 20
"""Free bytes left over after a segment, so a share never fills /dev/shm to the last page."""


class Segment(NamedTuple):
    """Where a segment lives and how big it is; what a handle carries between processes."""

    path: str
    size: int
    file: FileStamp | None = None
    """Set for a user's file shared in place (``_sharing.mapped``): corral never creates,
    fills or unlinks it."""

    @property
    def name(self) -> str:
        return self.file.name if self.file is not None else os.path.basename(self.path)

    @property
    def key(self) -> str:
        """This share in a process's cache of values: two shares of one file differ by name."""
        return self.path if self.file is None else f"{self.path}\0{self.file.name}"


def backing_dir(backing: str, dir: str | os.PathLike[str] | None) -> str:
    """The folder for a new segment: /dev/shm for ``"shm"`` (the temporary folder where there
    is no /dev/shm), ``dir`` or the temporary folder for ``"file"``."""
    if backing == "shm":
        if dir is not None:
            raise ConfigError('dir= is for backing="file"; "shm" segments live in /dev/shm')
        return SHM_DIR if os.path.isdir(SHM_DIR) else tempfile.gettempdir()
    if backing == "file":
        folder = os.fspath(dir) if dir is not None else tempfile.gettempdir()
        if not os.path.isdir(folder):
            raise ConfigError(f"dir={folder!r} is not a folder")
        return folder
    raise ConfigError(f'backing must be "shm" or "file", not {backing!r}')


def new_name() -> str:
    pid = os.getpid()
    # os.urandom is what secrets.token_hex reads; importing secrets (hmac, hashlib, OpenSSL)
    # cost ~10 ms of a share's time.
    return f"{PREFIX}{pid}-{_start_ticks(pid)}-{os.urandom(6).hex()}"


def owner_pid(name: str) -> int | None:
    """The pid in a segment name, or None for a name that is not corral's."""
    parts = name.split("-")
    if len(parts) != 4 or not name.startswith(PREFIX):
        return None
    try:
        return int(parts[1])
    except ValueError:
        return None


def owner_alive(name: str) -> bool:
    """Whether the process that created segment ``name`` still runs (pid and start time)."""
    pid = owner_pid(name)
    if pid is None:
        return True  # not ours: never touched
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    start = name.split("-")[2]
    return start == "0" or start == str(_start_ticks(pid))


def _start_ticks(pid: int) -> int:
    """When ``pid`` started, in clock ticks since boot (Linux); 0 where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0
    # Field 22; the command name (field 2) may contain spaces and parentheses.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[19])


def create(folder: str, size: int) -> tuple[Segment, mmap.mmap]:
    """A new segment of ``size`` bytes in ``folder`` and a writable mapping of it.

    Space is checked, then reserved with ``posix_fallocate``, before a byte is copied: a tmpfs
    that fills up during the copy would otherwise kill this process with SIGBUS.
    """
    check_space(folder, size)
    path = os.path.join(folder, new_name())
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        _reserve(fd, path, size)
        # MAP_POPULATE maps every page at once: filling a fresh tmpfs mapping page fault by
        # page fault is several times slower.
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        mapping = mmap.mmap(fd, max(size, 1), flags=flags)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    finally:
        os.close(fd)
    return Segment(path, size), mapping


def create_filled(
    path: str,
    size: int,
    fill: Callable[[memoryview], None],
    write: Callable[[int], None] | None = None,
) -> Segment:
    """A new segment at ``path``, filled by ``fill`` under a temporary name and renamed: a
    process that finds ``path`` finds it complete. (``share`` names a segment before making
    it, so a reader may look for it while it is being filled.) ``write``, when given, fills
    the file through its descriptor instead (``_layout.write_file``: one pass, no mapping)."""
    folder, name = os.path.split(path)
    part = os.path.join(folder, name + ".part")  # still corral-<pid>-<start>-...: swept
    check_space(folder, size)
    fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    if write is not None:
        try:
            try:
                write(fd)
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                raise ConfigError(_no_space(folder, size, None)) from None
            finally:
                os.close(fd)
            os.rename(part, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(part)
            raise
        return Segment(path, size)
    try:
        try:
            _reserve(fd, part, size)
            flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
            mapping = mmap.mmap(fd, max(size, 1), flags=flags)
        finally:
            os.close(fd)
        try:
            fill(memoryview(mapping))
        except BaseException:
            with contextlib.suppress(BufferError):  # the traceback may hold a view of it
                mapping.close()
            raise
        mapping.close()
        os.rename(part, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(part)
        raise
    return Segment(path, size)


def check_space(folder: str, size: int) -> None:
    """A ``ConfigError`` if ``size`` bytes (and a margin) do not fit in ``folder`` now."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return
    free = st.f_bavail * st.f_frsize
    if size + SPACE_MARGIN > free:
        raise ConfigError(_no_space(folder, size, free))


def _reserve(fd: int, path: str, size: int) -> None:
    if size == 0:
        os.ftruncate(fd, 1)
        return
    if not hasattr(os, "posix_fallocate"):  # macOS: no reservation, just the size
        os.ftruncate(fd, size)
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise ConfigError(_no_space(os.path.dirname(path), size, None)) from None


def _no_space(folder: str, size: int, free: int | None) -> str:
    have = f" ({human_size(free)} free)" if free is not None else ""
    hint = (
        ': use corral.share(obj, backing="file", dir=...) on a disk with room'
        if folder == SHM_DIR
        else ""
    )
    return f"cannot share {human_size(size)}: not enough space in {folder}{have}{hint}"


def attach(segment: Segment) -> mmap.mmap:
    """Map an existing segment read-only."""
    try:
        fd = os.open(segment.path, os.O_RDONLY)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"shared data {segment.name} is gone: it was released by its owner "
            "(release(), the end of its with block, or the collection of its last handle), "
            "or it was never copied into shared memory because it travelled by fork "
            "inheritance, and this process was not forked from its owner after the share"
        ) from None
    try:
        return mmap.mmap(fd, max(segment.size, 1), access=mmap.ACCESS_READ)
    finally:
        os.close(fd)


def unlink(segment: Segment) -> None:
    if segment.file is not None:
        return  # the user's file, shared in place: never ours to remove
    with contextlib.suppress(FileNotFoundError):
        os.unlink(segment.path)


def sweep(folders: tuple[str, ...] | None = None) -> list[str]:
    """Remove the segments of dead owners (a coordinator that was SIGKILLed); their paths.

    Never touches a segment whose owner runs, or a file whose name is not corral's.
    """
    if folders is None:
        folders = default_folders()
    removed = []
    for folder in folders:
        try:
            entries = os.scandir(folder)
        except OSError:
            continue
        with entries:
            for entry in entries:
                if entry.name.startswith(PREFIX) and not owner_alive(entry.name):
                    if not _mine(entry):  # another user's (pids are not ours to judge)
                        continue
                    with contextlib.suppress(OSError):  # gone already, or another user's
                        os.unlink(entry.path)
                        removed.append(entry.path)
    return removed


def _mine(entry: os.DirEntry[str]) -> bool:
    """Whether this user owns the file: root may unlink anyone's file in /dev/shm, and must
    not sweep another user's segment (its owner pid may run in a namespace we cannot see)."""
    try:
        return entry.stat(follow_symlinks=False).st_uid == os.geteuid()
    except OSError:
        return False


def default_folders() -> tuple[str, ...]:
    """Where segments are made when no ``dir`` is given: /dev/shm and the temporary folder."""
    folders = [SHM_DIR] if os.path.isdir(SHM_DIR) else []
    folders.append(tempfile.gettempdir())
    return tuple(folders)


def owned_by(pids: set[int], folder: str = SHM_DIR) -> list[str]:
    """Names of the segments in ``folder`` whose owner is one of ``pids`` (for leak checks)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(n for n in names if owner_pid(n) in pids)


if sys.platform == "win32":  # pragma: no cover
    raise ImportError("corral.share needs a POSIX system")
