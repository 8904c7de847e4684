"""A script that never closes its pool: it must still exit at once, leaving no process behind.

    python unclosed_pool.py START_METHOD MODE WORK_DIR

MODE:
  ``executor``  an Executor used once and dropped inside a function (no ``shutdown``)
  ``pool``      the same with a Pool (no ``close``, no ``with``)
  ``pending``   an Executor dropped while its task still runs: the future the script kept
                still gets its result (like ``ProcessPoolExecutor``), then the workers stop
  ``abandoned`` an Executor dropped while its task runs forever, its future dropped too:
                the collected executor waits for the task, so exit must cancel it
  ``cycle``     a Pool kept alive by a reference cycle until exit (never collected before)
  ``running``   a module-level Pool left open with a task still running at exit (cancelled)

Prints one JSON line: the pids of every process the script had started (workers, their
watchdogs, multiprocessing's helpers) still there just before it returned, and the pids of
the workers that ran its tasks.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import psutil

import corral

WAIT = 60.0


def getpid(_: object = None) -> int:
    return os.getpid()


def wait_for(path: str) -> int:
    """Return this worker's pid once ``path`` exists (polled, bounded)."""
    deadline = time.monotonic() + WAIT
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.01)
    return os.getpid()


def sleep_forever(ready: str) -> None:
    Path(ready).touch()
    while True:
        time.sleep(1)


def use_executor(method: str) -> list[int]:
    ex = corral.Executor(2, start_method=method)  # the example: never shut down
    assert ex.submit(pow, 2, 5).result() == 32
    return list(ex.map(getpid, range(4)))


def use_pool(method: str) -> list[int]:
    pool = corral.Pool(2, start_method=method)
    return pool.map(getpid, range(4))


def drop_with_pending(method: str, work: Path) -> object:
    ex = corral.Executor(2, start_method=method)
    return ex.submit(wait_for, str(work / "go"))


class Holder:
    def __init__(self, method: str) -> None:
        self.pool = corral.Pool(2, start_method=method)
        self.pool.holder = self  # type: ignore[attr-defined]  # the cycle


def descendants() -> list[int]:
    return [p.pid for p in psutil.Process().children(recursive=True)]


def main(method: str, mode: str, work: Path) -> None:
    global RUNNING
    workers: list[int] = []
    if mode == "executor":
        workers = use_executor(method)
    elif mode == "pool":
        workers = use_pool(method)
    elif mode == "pending":
        future = drop_with_pending(method, work)
        (work / "go").touch()  # the executor is gone: its task must still finish
        workers = [future.result(timeout=WAIT)]  # type: ignore[attr-defined]
    elif mode == "abandoned":
        ex = corral.Executor(2, start_method=method)
        workers = list(ex.map(getpid, range(4)))
        ex.submit(sleep_forever, str(work / "ready"))
        del ex
        deadline = time.monotonic() + WAIT
        while not (work / "ready").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    elif mode == "cycle":
        holder = Holder(method)
        workers = holder.pool.map(getpid, range(4))
        del holder
    elif mode == "running":
        RUNNING = corral.Pool(2, start_method=method)
        RUNNING.submit(sleep_forever, str(work / "ready"))
        deadline = time.monotonic() + WAIT
        while not (work / "ready").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print(json.dumps({"processes": descendants(), "workers": workers}), flush=True)


RUNNING = None

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
