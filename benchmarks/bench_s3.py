"""S3 — large read-only data: a 1 GiB float64 array read by 16 tasks on 2 workers.

Each task sums its 1/16 slice. Reported per contender: wall time (pool start-up included) and
the peak memory of the whole process tree, sampled every ~25 ms by a thread of the measured
process. Memory of one sample =

    Σ over the tree (this process and every descendant) of PSS (psutil ``memory_maps``)
  + pages of this run's files in /dev/shm that no process of the tree maps at that moment

(the second term is what joblib's memmap files and a corral segment hold between tasks, which
is in nobody's PSS). 'Before' is the tree's memory just before the clock starts, when the array
exists. For corral rows, 'data at peak' = (peak - (before - array) - the workers' own memory at
the peak, i.e. their PSS outside the shared files) / array: the copies of the data the tree
holds at its worst moment. The project's target is ≤ 1.15 with wall time no worse than the best
peer's.

The task functions are here, at module level, so workers import them by reference.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from bench_contenders import BASELINE, REGISTRY, WORKERS, Contender, register
from bench_report import Rows, _label_cell, fratio, ftime, table

TASKS = 16
SAMPLE_EVERY = 0.025
PICKLE_LIMIT = 60.0
"""Plain pickling of 1 GiB per task takes minutes: those rows stop waiting after this long."""
GIB = 1 << 30


# -- tasks (run in workers) --------------------------------------------------------------------


def _slice(n: int, i: int) -> slice:
    step = -(-n // TASKS)
    return slice(i * step, min(n, (i + 1) * step))


def corral_task(args: tuple[Any, int]) -> float:
    handle, i = args
    arr = handle.value
    return float(arr[_slice(len(arr), i)].sum())


def array_task(args: tuple[Any, int]) -> float:
    arr, i = args
    return float(arr[_slice(len(arr), i)].sum())


def joblib_task(arr: Any, i: int) -> float:
    return float(arr[_slice(len(arr), i)].sum())


def mpire_task(arr: Any, i: int) -> float:
    return float(arr[_slice(len(arr), i)].sum())


_ATTACHED: dict[str, Any] = {}


def shm_task(args: tuple[str, int, int]) -> float:
    """Hand-written shared_memory: attach once per worker, keep the mapping in a global."""
    from multiprocessing import shared_memory

    import numpy as np

    name, n, i = args
    if name not in _ATTACHED:
        shm = shared_memory.SharedMemory(name=name)
        _ATTACHED[name] = (shm, np.ndarray((n,), np.float64, buffer=shm.buf))
    arr = _ATTACHED[name][1]
    return float(arr[_slice(n, i)].sum())


# -- memory of the process tree ----------------------------------------------------------------


SHM = "/dev/shm"


def _run_files() -> dict[str, int]:
    """This run's files in /dev/shm (their names carry this process's pid) and their
    allocated bytes; joblib keeps its memmaps in a folder named with the pid."""
    mark = str(os.getpid())
    found: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir(SHM):
            if mark not in entry.name:
                continue
            if entry.is_dir(follow_symlinks=False):
                for root, _, files in os.walk(entry.path):
                    for f in files:
                        with contextlib.suppress(OSError):
                            path = os.path.join(root, f)
                            found[path] = os.stat(path).st_blocks * 512
            else:
                with contextlib.suppress(OSError):
                    found[entry.path] = entry.stat().st_blocks * 512
    return found


def tree_memory() -> tuple[int, int]:
    """(memory of the tree as defined above, the workers' PSS outside the run's files)."""
    import psutil

    me = psutil.Process()
    files = _run_files()
    mapped = dict.fromkeys(files, 0)
    total = workers_own = 0
    for proc in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            own = 0
            for m in proc.memory_maps(grouped=True):
                total += m.pss
                if m.path in mapped:
                    mapped[m.path] += m.pss
                else:
                    own += m.pss
            if proc.pid != me.pid:
                workers_own += own
    unmapped = sum(max(0, files[p] - mapped[p]) for p in files)
    return total + unmapped, workers_own


class Sampler:
    """Samples ``tree_memory`` from a thread; keeps the peak and the workers' own memory then."""

    def __init__(self) -> None:
        self.peak = 0
        self.workers_at_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Sampler:
        self.before, _ = tree_memory()
        self._take()
        self._thread.start()
        return self

    def _take(self) -> None:
        mem, workers = tree_memory()
        if mem > self.peak:
            self.peak, self.workers_at_peak = mem, workers

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            self._take()

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._take()


# -- contenders --------------------------------------------------------------------------------

Body = Callable[[Any, list[float]], list[float]]


def _measure(
    body: Body, *, in_shm: bool = False, npy: bool = False
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A registry entry: build the array (in corral shared memory for ``in_shm``; for ``npy``,
    saved to a ``.npy`` file in the temporary folder and loaded back with ``mmap_mode="r"``,
    every page read once: the file a user already has), compute the expected sums, then time
    ``body(data, expected)`` under the memory sampler."""

    def measure(params: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        import corral

        n = int(params["nbytes"]) // 8
        handle = None
        saved = None
        if npy:
            import tempfile

            fd, saved = tempfile.mkstemp(suffix=".npy")
            os.close(fd)
            np.save(saved, np.arange(n, dtype=np.float64))
            data = np.load(saved, mmap_mode="r")
        elif in_shm:
            handle = corral.Shared.empty(n)
            data = handle.writable()
            data[:] = np.arange(n, dtype=np.float64)  # integers: every sum is exact
        else:
            data = np.arange(n, dtype=np.float64)
        expected = [float(data[_slice(n, i)].sum()) for i in range(TASKS)]
        with Sampler() as mem:
            t0 = time.perf_counter()
            got = body(handle if in_shm else data, expected)
            wall = time.perf_counter() - t0
        if got != expected:
            wrong = sum(a != b for a, b in zip(got, expected, strict=True))
            raise AssertionError(f"wrong sums in {wrong} of {TASKS} tasks")
        nbytes = n * 8
        footprint = (mem.peak - (mem.before - nbytes) - mem.workers_at_peak) / nbytes
        if handle is not None:
            del data
            handle.release()
        if saved is not None:
            os.unlink(saved)
        return {
            "wall": wall,
            "n": TASKS,
            "nbytes": nbytes,
            "before": mem.before,
            "peak": mem.peak,
            "extra": mem.peak - mem.before,
            "workers_at_peak": mem.workers_at_peak,
            "footprint": footprint,
        }

    return measure


def serial(data: Any, expected: list[float]) -> list[float]:
    return [array_task((data, i)) for i in range(TASKS)]


def corral_share(start_method: str | None) -> Body:
    def body(data: Any, expected: list[float]) -> list[float]:
        import corral

        handle = corral.share(data)  # released when the map's pool closes
        items = [(handle, i) for i in range(TASKS)]
        return corral.map(corral_task, items, workers=WORKERS, start_method=start_method)

    return body


def corral_in_shm(start_method: str | None) -> Body:
    def body(handle: Any, expected: list[float]) -> list[float]:
        import corral

        items = [(handle, i) for i in range(TASKS)]
        with handle:  # pinned: the caller releases it after the measurement
            return corral.map(corral_task, items, workers=WORKERS, start_method=start_method)

    return body


def joblib_memmap(data: Any, expected: list[float]) -> list[float]:
    from joblib import Parallel, delayed

    return list(Parallel(n_jobs=WORKERS)(delayed(joblib_task)(data, i) for i in range(TASKS)))


def mpire_shared(data: Any, expected: list[float]) -> list[float]:
    from mpire import WorkerPool

    with WorkerPool(n_jobs=WORKERS, shared_objects=data, start_method="fork") as pool:
        return list(pool.map(mpire_task, range(TASKS), chunk_size=1))


def cf_pickle(data: Any, expected: list[float]) -> list[float]:
    from concurrent.futures import ProcessPoolExecutor, wait

    pool = ProcessPoolExecutor(WORKERS)
    futures = [pool.submit(array_task, (data, i)) for i in range(TASKS)]
    done, pending = wait(futures, timeout=PICKLE_LIMIT)
    if pending:
        for f in futures:
            f.cancel()
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        raise TimeoutError(f"{len(done)} of {TASKS} tasks done after {PICKLE_LIMIT:.0f} s")
    pool.shutdown()
    return [f.result() for f in futures]


def shm_by_hand(data: Any, expected: list[float]) -> list[float]:
    import multiprocessing as mp
    from multiprocessing import shared_memory

    import numpy as np

    shm = shared_memory.SharedMemory(create=True, size=data.nbytes, name=f"bench-{os.getpid()}")
    try:
        np.ndarray(data.shape, data.dtype, buffer=shm.buf)[:] = data
        with mp.get_context("fork").Pool(WORKERS) as pool:
            items = [(shm.name, len(data), i) for i in range(TASKS)]
            return pool.map(shm_task, items, chunksize=1)
    finally:
        shm.close()
        shm.unlink()


S3_CONTENDERS: list[tuple[str, str, str, str, Callable[[dict[str, Any]], dict[str, Any]], str]] = [
    ("serial", "serial loop", "serial", "—", _measure(serial), "in-process reference"),
    ("corral-share", "corral.share + corral.map", "corral", "forkserver (default)",
     _measure(corral_share(None)), "copy into /dev/shm once (inside the clock), map views"),
    ("corral-share-fork", "corral.share + corral.map fork", "corral", "fork",
     _measure(corral_share("fork")),
     "start_method='fork': workers forked after the share inherit the array, no segment"),
    ("corral-npy", "corral.share(np.load(mmap_mode='r')) + corral.map", "corral",
     "forkserver (default)", _measure(corral_share(None), npy=True),
     "a .npy file the process has, shared in place: workers map the same file, no copy"),
    ("corral-empty", "corral.Shared.empty + corral.map", "corral", "forkserver (default)",
     _measure(corral_in_shm(None), in_shm=True),
     "array built in shared memory before the clock: never copied"),
    ("corral-empty-fork", "corral.Shared.empty + corral.map fork", "corral", "fork",
     _measure(corral_in_shm("fork"), in_shm=True), "as above, start_method='fork'"),
    ("joblib", "joblib Parallel", "peer", "loky", _measure(joblib_memmap),
     "auto memmapping of arrays > 1 MB (dumped to /dev/shm)"),
    ("mpire", "mpire shared_objects", "peer", "fork (mpire default)", _measure(mpire_shared),
     "inherited by fork, copy-on-write"),
    ("shm-hand", "shared_memory by hand", "peer", "fork", _measure(shm_by_hand),
     "copy into SharedMemory once, workers attach by name (mp.Pool)"),
    ("cf-pickle", "cf.PPE, array in each task", "peer", "fork (mp default)", _measure(cf_pickle),
     f"plain pickling: the array travels with every task; stopped after {PICKLE_LIMIT:.0f} s"),
]  # fmt: skip

REGISTRY["S3"] = {}
BASELINE["S3"] = "serial"
for _key, _label, _kind, _method, _fn, _note in S3_CONTENDERS:
    register(Contender("S3", _key, _label, _kind, _method, _fn, slow=_key == "cf-pickle",
                       note=_note))  # fmt: skip


# -- report ------------------------------------------------------------------------------------


def _gib(x: float | None) -> str:
    return "—" if x is None else f"{x / GIB:.2f} GiB"


def render_s3(sc: dict[str, Any]) -> list[str]:
    rows = Rows(sc)
    nbytes = int(sc["params"]["nbytes"])
    base = rows.med(rows.baseline, "wall")
    out = []
    for c in sc["contenders"]:
        k = c["key"]
        wall = rows.med(k, "wall")
        if wall is None:
            why = "; ".join(sorted(set(rows.failures(k))))[:160] or "no result"
            out.append([_label_cell(c), c["start_method"], f"did not finish: {why}",
                        "", "", "", "", "", "", "0"])  # fmt: skip
            continue
        footprint = rows.med(k, "footprint") if c["kind"] == "corral" else None
        out.append([
            _label_cell(c), c["start_method"], ftime(wall), rows.spread(k, "wall", ftime),
            fratio(wall / base if base else None), _gib(rows.med(k, "peak")),
            _gib(rows.med(k, "extra")), _gib(rows.med(k, "workers_at_peak")),
            "—" if footprint is None else f"{footprint:.2f}", str(rows.n(k)),
        ])  # fmt: skip
    lines = [
        f"## S3 — {nbytes / GIB:g} GiB float64 array read by {TASKS} tasks on {WORKERS} workers "
        "(each sums its slice); pool start-up included",
        "",
        "Memory = peak over the run of Σ PSS over the whole process tree plus this run's "
        "/dev/shm pages that no process maps at that moment, sampled every 25 ms by a thread. "
        "'Extra' = peak \u2212 the tree's memory just before the clock (the array exists then). "
        "'Workers' own' = the workers' PSS outside shared files at the peak. 'Data at peak' "
        "(corral rows) = (peak \u2212 (before \u2212 array) \u2212 workers' own) / array: "
        "copies of the data held at the worst moment; target ≤ 1.15.",
        "",
        *table(
            ["contender", "start method", "wall median", "min\u2013max", "\u00d7 serial wall",
             "peak memory", "extra over start", "workers' own", "data at peak (\u00d7 array)",
             "n"],
            out,
            right_from=2,
        ),
        "",
        *_targets(rows),
    ]
    return lines


def _targets(rows: Rows) -> list[str]:
    peers = [k for k in rows.keys("peer") if rows.med(k, "wall") is not None]
    if not peers:
        return []
    best = min(peers, key=lambda k: rows.med(k, "wall") or float("inf"))
    best_wall = rows.med(best, "wall") or 0.0
    lines = [f"Targets (best peer by wall time: {rows.label(best)}, {ftime(best_wall)}):", ""]
    for k in rows.keys("corral"):
        wall, footprint = rows.med(k, "wall"), rows.med(k, "footprint")
        if wall is None or footprint is None:
            continue
        lines.append(
            f"- {rows.label(k)}: data at peak {footprint:.2f} \u00d7 array "
            f"({'meets' if footprint <= 1.15 else 'misses'} ≤ 1.15); wall {ftime(wall)} = "
            f"{wall / best_wall:.2f}\u00d7 the best peer "
            f"({'meets' if wall <= best_wall else 'misses'} ≤ 1.00)"
        )
    return lines

