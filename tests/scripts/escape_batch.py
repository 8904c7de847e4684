"""A coordinator for the test to SIGKILL: what its tasks started in other sessions, and its
Service's program, must not outlive it.

    python escape_batch.py MARKER_DIR TAG START_METHOD

A Pool of two (one would run in this process); its fixture starts a ``corral.Service`` (the
program below, which writes ``terminated`` to MARKER_DIR when it gets SIGTERM: proof that its
keeper, not a SIGKILL from the worker's tree kill, stopped it); its task runs ``escape.py``
(a grandchild in a new session, a double-fork daemon with an empty environment), writes
``running`` and hangs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import corral

ESCAPE = Path(__file__).resolve().parent / "escape.py"
SERVICE = """
import signal, sys, time
from pathlib import Path
def stop(*_):
    Path(sys.argv[1], "terminated").touch()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("up", flush=True)
while True:
    time.sleep(1)
"""


def touch(path: Path) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.touch()
    os.rename(tmp, path)


def service_fixture(markers: str, tag: str):
    @corral.fixture
    def service():
        argv = [sys.executable, "-c", SERVICE, markers, f"{tag}-service"]
        with corral.Service(argv, ready="up", port=None, grace=20) as running:
            yield running.pid

    return service


def task(markers: str, tag: str, *, service: int) -> None:
    subprocess.run([sys.executable, str(ESCAPE), markers, tag, "--bare-daemon"], check=True)
    touch(Path(markers) / "running")
    time.sleep(1000)


def main() -> None:
    markers, tag, start_method = sys.argv[1:4]
    with corral.Pool(2, start_method=start_method,
                     fixtures=[service_fixture(markers, tag)]) as pool:  # fmt: skip
        pool.run([corral.Task(task, (markers, tag))])


if __name__ == "__main__":
    main()
