"""The fork server: what it preloads, how it is started without the user's ``__main__``, and
its early start (issue 15, start-up).

    user's script                      coordinator                       fork server (mp's)
    ─────────────                      ───────────                       ──────────────────
    corral.Pool / map / imap / run ──► corral.__getattr__ ─ start_early ─► interpreter start,
      (first access)                     │                                 import corral
                                         ▼ import the coordinator           ._worker.preload
                                           (_pool, _engine, ...)            (in parallel)
    Pool(...)  ──────────────────────► first worker: ensure_running ──────► already up: fork

Under the default start method (forkserver) a first result waits for two things of about the
same size: the coordinator's own imports, and the fork server's interpreter start and preload.
Started at the first access to a name that makes a pool, before the coordinator's modules are
imported, the fork server does its part while the coordinator does its own, on another core.

What the early start changes, and why it does not matter to a worker. A worker forked by the
server inherits the server's process state of when it started, not the coordinator's of when
the pool starts it: multiprocessing sends each new worker the coordinator's current ``sys.path``
and working directory, and the process backend sends its environment (``environ``, applied by
``_worker.loop.main``), so a variable set between ``from corral import map`` and the call
still reaches the workers (it always did for the first pool; now for every pool).

Nothing is started when the pool would not use the fork server by default: another platform
default, ``CORRAL_WORKERS=1``, or a process that multiprocessing is still preparing (a child of
the user's own multiprocessing importing the main script). Nor when no core is idle (the load
average leaves less than one of this process's cores free): then there is no "at once", only
the same CPU time in another order (processes of one session share one scheduler slot under
Linux's autogroup), and a pool asked for ``start_method="fork"`` would pay for a server it
never uses. Measured on a 2-core machine at load 2.4 to 7.8, the early start forced on: the
first result of a fork pool took 1.85x as long, that of a forkserver pool 0.85x to 1.0x
(benchmarks/startup.py). A pool that asks for another start
method after an early start leaves the server idle; it exits with this process
(multiprocessing's ``alive`` pipe), as it does after any forkserver pool.

Workers never run the user's main script. Under spawn and forkserver, multiprocessing tells
each new process to re-import ``__main__`` (as ``__mp_main__``); corral does not need it
(cloudpickle sends functions and classes of ``__main__`` by value), so processes are started
without the main-module entries of multiprocessing's preparation data (``without_main``), and
the fork server preloads corral's worker only (``PRELOAD``), never ``__main__``.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.process
import multiprocessing.spawn
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ._platform import default_start_method

log = logging.getLogger("corral")

PRELOAD = ["corral._worker.preload"]
"""What the fork server imports once, so that every worker forks with it loaded."""

SERIAL_ENV = "CORRAL_WORKERS"
"""``CORRAL_WORKERS=1``: everything runs in-process (``_options.serial_forced``)."""


def start_early() -> None:
    """Start the fork server now, if a pool started now would use it; never raises (a server
    that cannot start is the first worker's error, raised where the pool starts it)."""
    if default_start_method() != "forkserver":
        return
    if os.environ.get(SERIAL_ENV, "").strip() == "1":
        return
    if getattr(multiprocessing.process.current_process(), "_inheriting", False):
        return  # the pool refuses to start here (``_pool._refuse_while_importing_main``)
    if not idle_core():
        return
    try:
        multiprocessing.get_context("forkserver").set_forkserver_preload(PRELOAD)
        with without_main():
            multiprocessing.forkserver.ensure_running()
    except Exception as exc:  # retried, and then raised, by the first worker's start
        log.debug("corral: the fork server could not be started early: %r", exc)


def idle_core() -> bool:
    """Whether a core of this process's is idle, by the last minute's load average."""
    try:
        return os.getloadavg()[0] <= len(os.sched_getaffinity(0)) - 1
    except (OSError, AttributeError):  # no load average, or no affinity (not Linux)
        return False


# -- starting processes without the user's __main__ ---------------------------------------------
#
# multiprocessing decides what a new process imports in ``spawn.get_preparation_data``, which
# ``Popen._launch`` (spawn, forkserver) and ``ForkServer.ensure_running`` call by module
# attribute. There is no parameter for it, and copying ``_launch`` would tie corral to private
# code that changes between Python versions. So the function is wrapped, once, by one that
# drops the main-module entries only while *this thread* is inside ``without_main`` (a
# thread-local flag): every other caller, on any thread, gets multiprocessing's own answer,
# unchanged. The wrapper is installed under a lock and never removed (removing it could undo
# another library's wrapper installed after ours).

_MAIN_KEYS = ("init_main_from_path", "init_main_from_name", "main_path")
_starting = threading.local()
_install_lock = threading.Lock()
_installed = False


def _install_main_filter() -> None:
    global _installed
    with _install_lock:
        if _installed:
            return
        original: Callable[[str], dict[str, Any]] = multiprocessing.spawn.get_preparation_data

        def get_preparation_data(name: str) -> dict[str, Any]:
            data = original(name)
            if getattr(_starting, "active", False):
                for key in _MAIN_KEYS:
                    data.pop(key, None)
            return data

        get_preparation_data.__wrapped__ = original  # type: ignore[attr-defined]
        multiprocessing.spawn.get_preparation_data = get_preparation_data
        _installed = True


@contextlib.contextmanager
def without_main() -> Iterator[None]:
    """Processes started on this thread inside the block do not import ``__main__``."""
    _install_main_filter()
    _starting.active = True
    try:
        yield
    finally:
        _starting.active = False
