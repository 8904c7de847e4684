"""corral's processes carry readable titles in ``ps``: workers, their watchdogs, the fork
server (checked in a fresh interpreter, so that corral is the one that starts it) and the
keepers of services.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from _procs import multiprocessing_helpers, wait_until

import corral

SRC = str(Path(__file__).parent.parent / "src")

SCRIPT = r"""
import json, multiprocessing.forkserver, os, psutil, time, corral

def cmdline(pid):
    return " ".join(psutil.Process(pid).cmdline()).strip()

def me(_):
    return os.getpid()

if __name__ == "__main__":
    with corral.Pool(2, start_method="forkserver") as pool:
        pids = sorted(set(pool.map(me, range(8), chunksize=1)))
        workers = {pid: cmdline(pid) for pid in pids}
        dogs = [c.pid for pid in pids for c in psutil.Process(pid).children()]
        deadline = time.monotonic() + 30  # a watchdog names itself just after its fork
        while time.monotonic() < deadline and any("watchdog" not in cmdline(d) for d in dogs):
            time.sleep(0.02)
        watchdogs = [cmdline(d) for d in dogs]
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
    # "corral watchdog of worker 4722 [pool 4711]": the worker's pid, then its pool
    assert all(
        re.fullmatch(r"corral watchdog of worker \d+ \[pool \d+\]", t.strip())
        for t in out["watchdogs"]
    ), out
    assert all(t.endswith(pool) for t in out["watchdogs"]), out
    assert out["server"] == f"corral fork server {pool}", out["server"]


def cmdline(pid):
    try:
        return " ".join(psutil.Process(pid).cmdline()).strip()
    except psutil.NoSuchProcess:
        return ""


def test_a_service_keeper_has_a_title():
    program = [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(60)"]
    with corral.Service(program, ready="ready", port=None) as service:
        helpers = multiprocessing_helpers() | {service.pid}
        keepers = [c.pid for c in psutil.Process().children() if c.pid not in helpers]
        assert len(keepers) == 1
        title = f"corral service keeper of {service.name} [for pid {os.getpid()}]"
        wait_until(lambda: cmdline(keepers[0]) == title, "the keeper's title")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_without_setproctitle_corral_works_untitled(method):
    code = (
        "import sys; sys.modules['setproctitle'] = None\n"  # import setproctitle fails
        "import corral\n"
        "def neg(x):\n"
        "    return -x\n"
        "if __name__ == '__main__':\n"
        f"    print(corral.map(neg, [1, 2], workers=2, start_method={method!r}))\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "[-1, -2]\n"
