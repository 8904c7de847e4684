"""The operating-system edges: CPU and memory counting, process groups, killing, exit status.

Only this module and the backends touch signals and process groups. Everything here is a plain
function with no state.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import sys
from pathlib import Path

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
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


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
