"""The keeper of a ``corral.Service``: a tiny process that stops the Service's program when
the process that started it dies without stopping it.

    process that started the Service                 keeper (own session)
    ────────────────────────────────                 ─────────────────────────────
    Keeper.start ── pipe, write end (only one) ────► blocks reading lines
    Keeper.tell("+pgid") after each program start     remembers the group
    Keeper.tell("-pgid") after stopping it            forgets it (the id may be reused)
    Keeper.close ── close the pipe ────────────────► EOF, no group left: exits
    (dies, however it dies: the kernel closes it) ──► EOF, groups left: SIGTERM to each group
                                                      and to every process carrying the
                                                      Service's mark; SIGKILL after grace

The mark (``SERVICE_ENV=<mark>`` in the environment) is what finds the processes the program
started outside its own group (a new session, a daemon's double fork): once its starter is
dead, no process tree leads to them. The keeper carries the mark too, so that a worker's
tree kill (``_platform.descendants``) spares it, and it spares itself.

The keeper runs ``python -I -S``: no site-packages (psutil) and no user code; it reads
``/proc`` directly (Linux; elsewhere only the groups are signalled).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

from .._platform import SERVICE_ENV
from .._proctitle import TITLE_IN_ISOLATED_PYTHON, title_args

SCRIPT = r"""
import os, signal, sys, time
grace, mark = float(sys.argv[1]), sys.argv[2]
needle = ("\0%s=%s\0" % (sys.argv[3], mark)).encode()
groups = set()
while True:  # EOF: the process that started the services is gone, or is done with them
    line = sys.stdin.buffer.readline()
    if not line:
        break
    if line[:1] == b"+":
        groups.add(int(line[1:]))
    elif line[:1] == b"-":
        groups.discard(int(line[1:]))
def marked():
    pids = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return pids
    for name in names:
        if name.isdigit() and int(name) != os.getpid():
            try:
                with open("/proc/%s/environ" % name, "rb") as f:
                    if needle in b"\0" + f.read():
                        pids.append(int(name))
            except OSError:
                pass
    return pids
def signal_all(sig):
    for group in groups:
        try:
            os.killpg(group, sig)
        except OSError:
            pass
    for pid in marked():
        try:
            os.kill(pid, sig)
        except OSError:
            pass
def alive(group):
    try:
        os.killpg(group, 0)
    except OSError:
        return False
    return True
if groups:
    signal_all(signal.SIGTERM)
    end = time.monotonic() + grace
    while time.monotonic() < end and (any(alive(g) for g in groups) or marked()):
        time.sleep(0.05)
    signal_all(signal.SIGKILL)
"""


class Keeper:
    """One keeper process, for the starts of one ``Service.start``."""

    def __init__(self, grace: float, mark: str, title: str) -> None:
        self.mark = mark
        code = TITLE_IN_ISOLATED_PYTHON + SCRIPT  # the title's arguments come last
        argv = [sys.executable, "-I", "-S", "-c", code, repr(grace), mark, SERVICE_ENV]
        self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            [*argv, *title_args(title)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # out of the worker's group: it must outlive a group kill
            close_fds=True,
            # SPT_NOENV: setproctitle must not write the title over the environment, where
            # a worker's tree kill reads the mark that spares the keeper (its argv is long
            # enough for the title).
            env={**os.environ, SERVICE_ENV: mark, "SPT_NOENV": "1"},
        )
        self.pid = self._proc.pid

    def tell(self, line: str) -> None:
        """``+pgid``: a program was started in that group; ``-pgid``: it was stopped."""
        proc = self._proc
        if proc is None or proc.stdin is None:
            return
        with contextlib.suppress(OSError):
            proc.stdin.write(line.encode() + b"\n")
            proc.stdin.flush()

    def close(self) -> None:
        """EOF with no group left: the keeper exits at once; wait for it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        try:
            proc.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
