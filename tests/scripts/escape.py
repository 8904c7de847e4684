"""Start processes that leave the caller's process group, then exit, leaving them orphans.

    python escape.py MARKER_DIR TAG [--bare-daemon] [--linger SECONDS]

- a grandchild in a session of its own (``Popen(start_new_session=True)``);
- a classic daemon (fork, setsid, fork), with an empty environment under ``--bare-daemon``
  (then only the process tree can find it, not the environment mark).

Both run ``python -c <sleep> TAG-<kind>`` for ``--linger`` seconds (default 1000): the test
finds them by TAG in their argv. Once both are started (exec'd), ``started`` appears in
MARKER_DIR.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

SLEEP = "import sys, time; time.sleep(float(sys.argv[2]))"


def touch(path: Path) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.touch()
    os.rename(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("markers", type=Path)
    parser.add_argument("tag")
    parser.add_argument("--bare-daemon", action="store_true")
    parser.add_argument("--linger", default="1000")
    args = parser.parse_args()
    session = subprocess.Popen([sys.executable, "-c", SLEEP, f"{args.tag}-session", args.linger],
                               start_new_session=True)  # fmt: skip
    read, write = os.pipe()
    first = os.fork()
    if first == 0:
        os.close(read)
        os.setsid()
        if os.fork() == 0:
            env = {} if args.bare_daemon else dict(os.environ)
            # ``write`` is close-on-exec: the launcher reads EOF once this has exec'd
            os.execve(sys.executable, [sys.executable, "-c", SLEEP, f"{args.tag}-daemon",
                                       args.linger], env)  # fmt: skip
        os._exit(0)
    os.close(write)
    os.waitpid(first, 0)
    os.read(read, 1)  # EOF once the daemon has exec'd
    while not _execed(session.pid):
        time.sleep(0.01)
    touch(args.markers / "started")


def _execed(pid: int) -> bool:
    """Whether the grandchild has exec'd, or already exited: a zombie's cmdline is empty
    (with ``--linger 0`` it may exit before the first look), and it is not reaped here, so
    that it becomes the adopter's zombie once this process exits."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                return True
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"-session" in f.read()
    except OSError:
        return True  # not Linux, or gone: nothing more to wait for


if __name__ == "__main__":
    main()
