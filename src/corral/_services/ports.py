"""TCP ports that no other corral process and no other program is using, reserved race-free.

Each candidate port passes two checks, in this order:

1. **A lock file** ``<runtime dir>/ports/<port>.lock`` taken with ``flock(LOCK_EX | LOCK_NB)``.
   This is the agreement between corral processes: the workers of one run and separate runs
   on the same machine never hold the same port. The kernel drops the lock when its holder
   closes the file or dies, so a killed worker never leaves a port reserved.
2. **A bind** to the port (with ``SO_REUSEADDR``, as servers bind): the check against every
   other program, such as a foreign server squatting the port.

Lock files are removed when released, with the usual pattern that keeps ``flock`` sound when
files are unlinked: the holder unlinks the file *while still holding the lock*, then closes
it; a process that acquires a lock checks afterwards that the path still names the inode it
locked (``fstat`` against ``stat``) and starts over if not. Without the check, a process that
opened the file just before it was unlinked would lock the orphaned inode while a third one
locks a fresh file of the same name: two holders of one port. A process killed while holding
a port leaves its file behind (nothing unlinks it); the next process that takes that port
and releases it removes it.

The lock is taken first: a bind test alone races (two workers both see the port free).
Between the bind test and the service's own bind a foreign program can still take the port;
``Service`` notices (the program exits or never becomes ready) and tries another.

The runtime directory is ``$CORRAL_RUNTIME_DIR``, else ``$XDG_RUNTIME_DIR/corral``, else
``<tmp>/corral-<uid>``; created private (0700) and used only if this user owns it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .._errors import ServiceError
from .._public import public

SCAN = 1000
"""From an explicit start port, how many ports upward are candidates."""

EPHEMERAL_TRIES = 200
"""How many ports chosen by the OS are tried for ``port="auto"`` before giving up."""


class HeldPort:
    """A port held for this process until ``release`` (or until this process dies)."""

    def __init__(self, port: int, fd: int, path: Path) -> None:
        self.port = port
        self._fd: int | None = fd
        self._path = path

    def release(self) -> None:
        """Free the port and remove its lock file: unlinked while the lock is still held, so
        no other process can hold a lock on this inode at that moment (see the module text)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self._path)
        with contextlib.suppress(OSError):
            os.close(fd)

    def __repr__(self) -> str:
        return f"<HeldPort port {self.port}{'' if self._fd is not None else ' released'}>"


def reserve(
    host: str = "127.0.0.1", *, start: int | None = None, avoid: frozenset[int] = frozenset()
) -> HeldPort:
    """Reserve a free port on ``host``: chosen by the OS (``start`` None), or the first free
    one from ``start`` upward. Ports in ``avoid`` are skipped (those a caller saw fail)."""
    candidates = _ephemeral(host) if start is None else iter(range(start, min(start + SCAN, 65536)))
    directory = ports_dir()
    for port in candidates:
        if port in avoid:
            continue
        path = directory / f"{port}.lock"
        fd = _lock(path)
        if fd is None:
            continue
        reservation = HeldPort(port, fd, path)
        if _bindable(host, port):
            return reservation
        reservation.release()
    where = "chosen by the OS" if start is None else f"in {start}..{start + SCAN - 1}"
    raise ServiceError(f"no free TCP port on {host} {where}")


_held: dict[int, HeldPort] = {}
"""Ports handed out by ``free_port``: reserved for the life of this process, since the caller
only gets a number back (this registry is the reservation; nothing else reads it)."""


@public
def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free now and that no other corral process (this run's
    workers or another run's) will be given while this process lives.

    For starting a server yourself; ``corral.Service`` reserves its own ports.
    """
    reservation = reserve(host, avoid=frozenset(_held))
    _held[reservation.port] = reservation
    return reservation.port


def ports_dir() -> Path:
    """The directory of the port lock files, created private to this user."""
    base = os.environ.get("CORRAL_RUNTIME_DIR")
    if base:
        root = Path(base)
    elif os.environ.get("XDG_RUNTIME_DIR") and Path(os.environ["XDG_RUNTIME_DIR"]).is_dir():
        root = Path(os.environ["XDG_RUNTIME_DIR"]) / "corral"
    else:
        root = Path(tempfile.gettempdir()) / f"corral-{os.getuid()}"
    directory = root / "ports"
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=0o700, parents=True)
    info = root.stat()
    if info.st_uid != os.getuid():
        raise ServiceError(
            f"the runtime directory {root} belongs to another user; set CORRAL_RUNTIME_DIR"
        )
    return directory


LOCK_TRIES = 100
"""How often a lock is taken again when its file was removed under us (each time means that
another process released that port in between; more than a few in a row does not happen)."""


def _lock(path: Path) -> int | None:
    """An open, exclusively locked lock file at ``path``, or None if someone holds it.

    Invariant on return: ``path`` names the locked inode. A file unlinked by its releasing
    holder between our ``open`` and our ``flock`` is stale (a new file may already exist and
    be locked by someone else): we let it go and open the path again.
    """
    for _ in range(LOCK_TRIES):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                return None
            raise
        if _same_file(fd, path):
            return fd
        os.close(fd)
    return None  # pragma: no cover - the file kept being replaced: treat the port as busy


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _bindable(host: str, port: int) -> bool:
    family = _family(host)
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _ephemeral(host: str) -> Iterator[int]:
    """Ports the OS picks as free, each once: ``bind(port 0)`` and read back the number."""
    seen: set[int] = set()
    family = _family(host)
    for _ in range(EPHEMERAL_TRIES):
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in seen:
            seen.add(port)
            yield port


def _family(host: str) -> socket.AddressFamily:
    try:
        return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise ServiceError(f"cannot resolve host {host!r}: {exc}") from exc
