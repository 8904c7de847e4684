"""What one Call cost its worker: CPU of the worker and of its ended children, and peak memory.

Runs in a worker process, twice per Call (``begin`` before its first item, ``end`` after its
last), never per item: the fast item loop of ``_worker.execute`` stays as it is. Measured
on S1 (20,000 trivial tasks): see ``benchmarks/RESULTS.md`` and ``docs/observability.md``.

How each figure is taken, and how far it can be trusted:

- CPU: ``time.process_time()`` (user + system, every thread of the worker) over the Call,
  plus ``getrusage(RUSAGE_CHILDREN)`` user + system since the previous Call's end (one
  syscall per Call: a child reaped between Calls counts in the next Call). The kernel
  counts a child's CPU only once the child has ended and been waited for: a subprocess the
  task ran and waited for (``subprocess.run``) is counted; one still running when the Call
  ends is not (its CPU lands in the Call during which it is reaped, or nowhere).
- Peak RSS, Linux: at the end of each Call the worker reads ``VmHWM`` from
  ``/proc/self/status`` (the kernel's high-water mark of its resident size) and writes ``5``
  to ``/proc/self/clear_refs``, which resets that mark to the current size: the exact peak
  of the worker since the previous Call ended, i.e. during this Call and while its
  arguments were unpickled (and the previous Result pickled). About 15 µs per Call, most of
  it the kernel formatting ``status``: so only for Calls of at least ``EXACT_AFTER``; a
  shorter Call gets ``ru_maxrss``, the peak since the last reset, an upper bound (with
  every thread alive it is the kernel's mark; a thread that exited stored the mark of that
  moment in it, which no reset lowers: hence ``VmHWM`` for the exact figure). To it is
  added the peak of the largest child that ended during the Call (or since the previous
  Call), when it set a new record for this worker: the kernel keeps only the
  largest peak of all the children ever waited for (``RUSAGE_CHILDREN``'s ``ru_maxrss``),
  so a child smaller than an earlier one, or still running, is not seen, and the sum is an
  upper bound of the real joint peak (the worker's and the child's peaks need not
  coincide). Where the reset is refused (not Linux, a locked-down ``/proc``) the figure is
  the worker's peak since it started (``ru_maxrss``), which only grows.
- ``lifetime_peak``: the worker's peak since it started, what ``Result.max_rss`` always
  said; kept here since the reset above moves the kernel's own mark.

The serial backend runs Calls in the caller's process: resetting the caller's high-water
mark would change what the user's own code reads, so there the Meter is made with
``reset_peak=False``.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import time

from .._platform import max_rss_bytes

_KIB = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux

EXACT_AFTER = 0.005
"""Calls at least this long (seconds) get their exact peak (``VmHWM``, then a reset: ~15
µs). Shorter ones (chunks of tiny tasks, benchmark S1) get ``ru_maxrss`` (~1 µs): the peak
since the last exact reading, an upper bound. Growing the resident size costs a page fault
per page (tens of µs per MiB), so a Call this short cannot have added more than a few
tens of MiB that the next exact reading would not also see."""


class Meter:
    """Per-Call CPU and peak memory of this process (see the module docstring)."""

    def __init__(self, reset_peak: bool = True) -> None:
        self._clear: int | None = None
        self._status: int | None = None
        self.lifetime_peak = max_rss_bytes()
        if reset_peak and sys.platform.startswith("linux"):
            try:
                self._clear = os.open("/proc/self/clear_refs", os.O_WRONLY | os.O_CLOEXEC)
                self._status = os.open("/proc/self/status", os.O_RDONLY | os.O_CLOEXEC)
                os.write(self._clear, b"5")
            except OSError:
                self.close()
        self._cpu0 = 0.0
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._child_cpu0 = children.ru_utime + children.ru_stime
        self._child_peak0 = children.ru_maxrss

    @property
    def resets(self) -> bool:
        """Whether the peak is per Call (else: the worker's peak so far)."""
        return self._clear is not None

    def begin(self) -> float:
        """The Call starts: its CPU clock's start (``time.process_time``), which the caller
        may use too (one clock read per Call, not two)."""
        self._cpu0 = time.process_time()
        return self._cpu0

    def end(self, seconds: float) -> tuple[float, float, int]:
        """``(cpu, child_cpu, peak_rss)`` of the Call since ``begin``, which took
        ``seconds``. Past ``EXACT_AFTER`` the high-water mark is read, then reset for the
        next Call; a shorter Call gets the peak since the last reset (an upper bound)."""
        cpu = time.process_time() - self._cpu0
        # Children: since the previous Call's end (one syscall per Call, not two), so a
        # child reaped between Calls counts in the next one.
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        child_total = children.ru_utime + children.ru_stime
        child_cpu = child_total - self._child_cpu0
        self._child_cpu0 = child_total
        if seconds >= EXACT_AFTER or self._clear is None:
            peak = self._peak()
        else:
            peak = max_rss_bytes()  # max(kernel mark since the last reset, exited threads')
            if peak > self.lifetime_peak:
                self.lifetime_peak = peak
        if children.ru_maxrss > self._child_peak0:
            self._child_peak0 = children.ru_maxrss
            peak += children.ru_maxrss * _KIB
        return cpu, max(0.0, child_cpu), peak

    def _peak(self) -> int:
        """The kernel's high-water mark since the last reset (then reset), folded into the
        worker's lifetime peak; or, without resets, the lifetime peak."""
        peak = 0
        if self._status is not None and self._clear is not None:
            try:
                peak = _vm_hwm(os.pread(self._status, 4096, 0))
                os.write(self._clear, b"5")
            except OSError:
                self.close()
        if not peak:
            peak = max_rss_bytes()
        if peak > self.lifetime_peak:
            self.lifetime_peak = peak
        return peak

    def close(self) -> None:
        for fd in (self._clear, self._status):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._clear = self._status = None


def _vm_hwm(status: bytes) -> int:
    """``VmHWM`` of a ``/proc/<pid>/status`` text, in bytes (0 if absent)."""
    at = status.find(b"VmHWM:")
    if at < 0:
        return 0
    fields = status[at + 6 : status.find(b"\n", at)].split()
    return int(fields[0]) * 1024 if fields else 0
