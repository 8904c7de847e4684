"""A coordinator for the test to SIGKILL: its workers' servers must not outlive it.

    python service_batch.py MARKER_DIR START_METHOD

A Pool of 2 workers, each with a ZeroMQ simulation server (a ``corral.Service`` started by a
worker fixture); both tasks hang. Markers in MARKER_DIR: ``service-<pid>`` once a server is
ready, ``worker-<pid>`` once a task runs with it.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

import corral

SIMSERVER = Path(__file__).resolve().parents[2] / "examples" / "simulation_sweep" / "simserver.py"


def touch(path: Path) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.touch()
    os.rename(tmp, path)


def server_fixture(markers: Path):
    @corral.fixture
    def server():
        argv = [sys.executable, str(SIMSERVER), "--interactive=zmq",
                "--interactivePort={port}", "-z={token}"]  # fmt: skip
        with corral.Service(argv) as service:
            touch(markers / f"service-{service.pid}")
            yield service.pid

    return server


def task(x: int, marker_dir: str, *, server: int) -> int:
    touch(Path(marker_dir) / f"worker-{os.getpid()}")
    time.sleep(1000)
    return x


def main() -> None:
    markers, start_method = Path(sys.argv[1]), sys.argv[2]
    fn = functools.partial(task, marker_dir=str(markers))
    with corral.Pool(2, start_method=start_method, fixtures=[server_fixture(markers)]) as pool:
        pool.map(fn, range(2), chunksize=1)


if __name__ == "__main__":
    main()
