"""The operating-system edges: CPU and memory counting, process groups, killing, exit status.

Only this module, the backends and the Service keeper touch signals and process groups.
Everything here is a plain function with no state.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import signal
import sys
from collections.abc import Iterable
from typing import Any

from ._public import public

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@public
def cpu_count() -> int:
    """CPUs this process may really use: affinity mask, then cgroup CPU quota; at least 1.

    ``os.cpu_count()`` counts the machine's CPUs, which oversubscribes a container limited
    to 2 of 64 cores (what loky's ``cpu_count`` fixes too).
    """
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def _cgroup_cpu_quota() -> float | None:
    """CPUs allowed by the cgroup (v2 ``cpu.max`` or v1 CFS quota), or None when unlimited."""
    try:
        text = _read("/sys/fs/cgroup/cpu.max").split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int(_read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"))
        period = int(_read("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))
        if quota > 0 and period > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def _read(path: str) -> str:
    # (plain open, not pathlib: pathlib's import, with urllib.parse and ipaddress, is a few
    # ms of every coordinator's and fork server's start)
    with open(path) as f:
        return f.read()


def rss_bytes() -> int:
    """This process's resident set size now."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        import psutil

        return int(psutil.Process().memory_info().rss)


def max_rss_bytes() -> int:
    """This process's peak resident set size so far."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def become_group_leader() -> None:
    """Put this process in a process group of its own, so that killing the group kills what
    the task started (subprocesses) and a terminal's Ctrl-C reaches only the coordinator."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)


def signal_tree(pid: int, sig: int) -> None:
    """Send ``sig`` to ``pid``'s process group if ``pid`` leads one, else to ``pid`` alone.

    Invariant: never signal a group that ``pid`` does not lead: a worker that has not yet
    called ``become_group_leader`` still shares the coordinator's group.
    """
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# -- descendants ---------------------------------------------------------------------------------
#
# A task may start processes that leave the worker's process group (``start_new_session``,
# a daemon's double fork), so a group kill misses them. Three tools find them:
#
# - the worker is a *child subreaper* (Linux): a descendant orphaned by the death of its
#   parent is re-parented to the worker, not to init, so while the worker lives every
#   process it started, however deep, is in its tree (``descendants``);
# - the worker marks its environment (``WORKER_ENV``), which what it starts inherits: once
#   the worker is dead its tree is gone, and only the mark finds them (``marked``);
# - a ``corral.Service``'s program and keeper carry ``SERVICE_ENV``: they belong to the
#   Service, whose keeper stops them (gracefully, SIGTERM then SIGKILL), so the tree kills
#   of a worker spare them and everything under them.

WORKER_ENV = "CORRAL_WORKER"
"""Set in each worker to ``worker_mark(pid)``; inherited by the processes its tasks start."""

SERVICE_ENV = "CORRAL_SERVICE"
"""Set in a Service's program and keeper to the Service's mark."""

KILL_PASSES = 50
"""How often ``kill_descendants`` walks the tree again for processes started meanwhile."""


def become_subreaper() -> bool:
    """Make this process adopt its orphaned descendants (``PR_SET_CHILD_SUBREAPER``, Linux
    3.4+); False where that is not possible (other systems: only the group kill and the
    environment mark find a task's processes there)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    pr_set_child_subreaper = 36
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def worker_mark(pid: int) -> str:
    """A mark unique to process ``pid`` for this boot: its pid and start time (clock ticks),
    so a reused pid never matches. Readable by any process of this user."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return f"{pid}.{int(fields[19])}"  # field 22 of stat: starttime
    except (OSError, IndexError, ValueError):
        try:
            import psutil

            return f"{pid}.{psutil.Process(pid).create_time():.6f}"
        except Exception:  # gone, or no way to tell: a mark no process carries
            return f"{pid}.unknown"


def descendants(pid: int, *, spare_services: bool = True) -> list[Any]:
    """The live processes (``psutil.Process``) under ``pid``, parents before children, less
    (``spare_services``) the Services (``SERVICE_ENV``) and everything under them."""
    import psutil

    children = _live_children_map()
    found: list[Any] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), ()):
            try:
                proc = psutil.Process(child)  # its start time, for a safe signal later
            except psutil.Error:
                continue
            if child != pid and not (spare_services and _is_service(proc)):
                found.append(proc)
                stack.append(child)
    return found


def _live_children_map() -> dict[int, list[int]]:
    """``{ppid: [pid, ...]}`` of every process but zombies: read from ``/proc`` on Linux
    (a few ms; psutil's ``process_iter`` takes ten times longer), else through psutil."""
    children: dict[int, list[int]] = {}
    if os.path.isdir("/proc/self/task"):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                fields = _stat_fields(int(entry.name))
                if fields is not None and fields[0] != b"Z":
                    children.setdefault(int(fields[1]), []).append(int(entry.name))
        return children
    import psutil

    for proc in psutil.process_iter(["ppid", "status"]):
        if proc.info["status"] != psutil.STATUS_ZOMBIE:
            children.setdefault(proc.info["ppid"], []).append(proc.pid)
    return children


def _is_service(proc: Any) -> bool:
    import psutil

    try:
        return SERVICE_ENV in proc.environ()
    except (psutil.Error, OSError):
        return False


def marked(name: str, value: str, *, spare: Iterable[int] = ()) -> list[int]:
    """Pids of this user's processes whose environment has ``name=value`` (Linux: read from
    ``/proc``, without psutil), less those in ``spare``. A process that cleared or replaced
    its environment is not found."""
    if not os.path.isdir("/proc"):
        return []
    needle = f"\0{name}={value}\0".encode()
    skip = {os.getpid(), *spare}
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                if needle in b"\0" + f.read():
                    pids.append(int(entry.name))
        except OSError:  # gone, another user's, or a kernel thread
            continue
    return pids


def kill_marked(name: str, value: str, sig: int, *, spare: Iterable[int] = ()) -> list[int]:
    """Send ``sig`` to every process ``marked(name, value)`` except Services (``SERVICE_ENV``,
    unless that is the mark asked for) and ``spare``; the pids signalled."""
    hit = []
    for pid in marked(name, value, spare=spare):
        if name != SERVICE_ENV and _environ_has(pid, SERVICE_ENV):
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
            hit.append(pid)
    return hit


def _environ_has(pid: int, name: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return (b"\0" + f.read()).find(f"\0{name}=".encode()) >= 0
    except OSError:
        return False


def signal_processes(procs: Iterable[Any], sig: int) -> None:
    """Send ``sig`` to each ``psutil.Process``, quietly skipping those gone (psutil checks a
    process's start time first, so a reused pid is never signalled)."""
    import psutil

    for proc in procs:
        with contextlib.suppress(psutil.Error, OSError):
            proc.send_signal(sig)


def kill_descendants(pid: int, *, spare: Iterable[int] = ()) -> None:
    """SIGKILL everything under ``pid`` (but Services and ``spare``), walking again until
    nothing is left: ``pid`` must be a live subreaper, so that the
    orphans of each killed process come back under it and are found by the next walk."""
    spared = set(spare)
    for _ in range(KILL_PASSES):
        left = [p for p in descendants(pid) if p.pid not in spared]
        if not left:
            return
        signal_processes(left, signal.SIGKILL)


def reap_adopted() -> int:
    """Reap this subreaper's zombie children that it adopted; how many.

    Only children that this process certainly did not start are reaped: user code may still
    wait for its own (``Popen.wait`` would read exit code 0 if we reaped its child first).
    Certain: a child in a session that is neither this process's nor led by the child itself
    (a daemon's double fork: a child of ours would have our session, or lead its own after
    ``setsid``). Others (orphans in our session, orphaned session leaders) stay zombies until
    this process exits. Cheap when there is nothing to reap: one ``waitid`` call.
    """
    if not hasattr(os, "waitid"):
        return 0
    try:
        if os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            return 0
    except ChildProcessError:
        return 0
    session = os.getsid(0)
    reaped = 0
    for child in children_of(os.getpid()):
        state = _stat_fields(child)
        if state is None or state[0] != b"Z":
            continue
        child_session = int(state[3])
        if child_session not in (session, child):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child, os.WNOHANG)
                reaped += 1
    return reaped


def children_of(pid: int) -> list[int]:
    """The children of ``pid`` (all its threads'), read cheaply from ``/proc`` on Linux;
    elsewhere through psutil."""
    pids: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                pids += [int(p) for p in f.read().split()]
    except FileNotFoundError:
        if os.path.isdir("/proc"):
            return pids  # gone
        return _children_by_psutil(pid)
    except OSError:
        return _children_by_psutil(pid)
    return pids


def _children_by_psutil(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children()]
    except psutil.Error:
        return []


def _stat_fields(pid: int) -> list[bytes] | None:
    """Fields 3 onwards of ``/proc/PID/stat`` (state, ppid, pgrp, session, ...)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def set_parent_death_signal(sig: int) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, sig, 0, 0, 0)


def kill_group(pgid: int, sig: int) -> None:
    """Signal a whole process group by id; quiet if it is already gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def default_start_method() -> str:
    """forkserver on Linux (fork is unsafe with threads; spawn is slow); spawn elsewhere."""
    return "forkserver" if sys.platform.startswith("linux") else "spawn"


THREAD_ENV = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def limit_native_threads(n: int) -> None:
    """Cap BLAS/OpenMP thread pools in this process at ``n`` threads.

    Environment variables catch libraries loaded later; threadpoolctl resizes those already
    loaded. A variable the user set explicitly is left alone.
    """
    for name in THREAD_ENV:
        os.environ.setdefault(name, str(n))
    if not any(m in sys.modules for m in ("numpy", "scipy", "torch")):
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - it is a declared dependency
        return
    threadpool_limits(limits=n)


PF_EXITING = 0x4
"""The kernel's flag of a process that has begun to exit (``flags``, field 9 of its stat)."""


def exiting(pid: int) -> bool:
    """Whether ``pid`` has begun to exit or has exited (Linux; elsewhere False). The kernel
    sets PF_EXITING before it closes a dying process's files: a peer that saw its connection
    drop may find the process not yet a zombie, but always exiting."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 7:
        return False
    try:
        return fields[0] in (b"Z", b"X") or bool(int(fields[6]) & PF_EXITING)
    except ValueError:
        return False
