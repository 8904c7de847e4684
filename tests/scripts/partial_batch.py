"""Run chunked batches that get interrupted mid-chunk (Ctrl-C or SIGTERM sent by the test).

    python partial_batch.py MARKER_DIR MODE

MODE: ``map`` (corral.map, 2 workers, chunks of 5), ``run`` (corral.run of keyed Tasks, chunks
of 5), ``serial`` (backend="serial": the chunks run in this process), ``auto`` (corral.map with
automatic chunks, 2 workers), ``share`` (like map, with a ``corral.share`` segment in the
items), ``share-serial`` (the same in serial mode), ``share-imap`` (like share, with
corral.imap), ``deaf`` (like map, but the hanging tasks block the hand-over signal, as a task
stuck in C code that holds the GIL cannot answer it either), ``own-handler`` (like share, but the
script installs a SIGTERM handler of its own first, which exits with status 3).

Every task leaves ``start-<x>`` in MARKER_DIR when it starts. Items with ``x % 5 == 3`` then
leave ``running-<x>`` and hang; the others leave ``done-<x>`` and return ``x * x``. So each
chunk of 5 has three finished items, one running and one that never starts. On
KeyboardInterrupt the script prints one JSON line with the partial report, then re-raises.
With ``share``, the segment's path is printed first as ``{"path": ...}``.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
from pathlib import Path

import corral

N = 20


def touch(path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.touch()
    os.rename(tmp, path)


def task(x: int, marker_dir: str, handle: corral.Shared | None = None, deaf: bool = False) -> int:
    markers = Path(marker_dir)
    touch(markers / f"start-{x}")
    if handle is not None:
        handle.value  # noqa: B018 - the worker maps the segment
    if x % 5 == 3:
        if deaf:
            signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
        touch(markers / f"worker-{os.getpid()}")
        touch(markers / f"running-{x}")
        time.sleep(1000)
    touch(markers / f"done-{x}")
    return x * x


def main() -> None:
    marker_dir, mode = sys.argv[1], sys.argv[2]
    handle = None
    if mode.startswith("share") or mode == "own-handler":
        if mode == "own-handler":
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))
        # a dict is copied into its segment at once (bytes alone would wait for a worker)
        handle = corral.share({"data": bytes(1 << 20)})
        print(json.dumps({"path": handle.path}), flush=True)
    fn = functools.partial(task, marker_dir=marker_dir, handle=handle, deaf=mode == "deaf")
    serial = mode.endswith("serial")
    workers: dict[str, object] = {"backend": "serial"} if serial else {"workers": 2}
    chunks: dict[str, object] = {"chunksize": 5} if mode != "auto" else {}
    try:
        if mode == "share-imap":
            for _ in corral.imap(fn, range(N), chunksize=5, kill_grace=0.5, **workers):
                pass
        elif mode == "run":
            tasks = [corral.Task(fn, (x,), key=f"t{x}") for x in range(N)]
            corral.run(tasks, kill_grace=0.5, **workers, **chunks)
        else:
            corral.map(fn, range(N), kill_grace=0.5, **workers, **chunks)
    except KeyboardInterrupt as exc:
        report = getattr(exc, "report", None)
        caught = {"caught": type(exc).__name__, "has_report": report is not None}
        if report is not None:
            caught["statuses"] = [str(o.status) for o in report.outcomes]
            caught["values"] = [o.value for o in report.outcomes]
            caught["attempts"] = [o.attempts for o in report.outcomes]
        print(json.dumps(caught), flush=True)
        raise
    print(json.dumps({"caught": None}), flush=True)


if __name__ == "__main__":
    main()
