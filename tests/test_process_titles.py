"""corral's processes carry readable titles in ``ps``: workers, their watchdogs, the fork server.

Run in a fresh interpreter so that corral is the one that starts the fork server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).parent.parent / "src")

SCRIPT = r"""
import json, multiprocessing.forkserver, os, psutil, corral

def cmdline(pid):
    return " ".join(psutil.Process(pid).cmdline()).strip()

def me(_):
    return os.getpid()

if __name__ == "__main__":
    with corral.Pool(2, start_method="forkserver") as pool:
        pids = sorted(set(pool.map(me, range(8), chunksize=1)))
        workers = {pid: cmdline(pid) for pid in pids}
        watchdogs = [cmdline(c.pid) for pid in pids for c in psutil.Process(pid).children()]
        server = cmdline(multiprocessing.forkserver._forkserver._forkserver_pid)
    print(json.dumps({"workers": workers, "watchdogs": watchdogs, "server": server,
                      "me": os.getpid()}))
"""


@pytest.mark.slow
def test_workers_watchdogs_and_fork_server_have_titles():
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("CORRAL_WORKERS", None)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=240,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    pool = f"[pool {out['me']}]"  # named by its coordinator: the script's process
    titles = sorted(out["workers"].values())
    assert len(titles) == 2
    for title in titles:
        assert title.startswith("corral worker ") and title.endswith(pool), title
    assert {t.split()[2] for t in titles} <= {"0", "1"}
    assert len(out["watchdogs"]) == 2
    assert all(t.startswith("corral watchdog of worker ") for t in out["watchdogs"]), out
    assert all(t.endswith(pool) for t in out["watchdogs"]), out
    assert out["server"] == f"corral fork server {pool}", out["server"]
