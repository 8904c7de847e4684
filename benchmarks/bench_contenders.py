"""The contenders, one registry entry per (scenario, contender), and what one repetition measures.

A repetition runs in a fresh process (``run.py --one SCENARIO CONTENDER``): it calls the entry's
function with the scenario's parameters and prints the dict it returns as JSON.

S1 and S2 entries are built from one *pool adapter* per contender: a context manager that
starts the pool and yields ``run(fn, items) -> list``. The scenario function times what it needs
around it. S4 entries are one function each: start a pool, get one trivial result, and hand back
how to shut the pool down.

Libraries are imported inside the functions, so that a repetition loads only its own
contender's library (no foreign threads or import side effects in the measured process).
"""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bench_tasks import burn, inc, s2_items

WORKERS = 2
WARM_ITEMS = 100
PAIRED_CALLS = 10
"""S2: serial ``burn`` calls made just before and just after the batch (each side)."""

Runner = Callable[[Callable[[Any], Any], list[Any]], list[Any]]
Adapter = Callable[[], contextlib.AbstractContextManager[Runner]]


@dataclass(frozen=True)
class Contender:
    scenario: str
    key: str
    label: str
    kind: str  # "serial" | "corral" | "peer"
    start_method: str
    fn: Callable[[dict[str, Any]], dict[str, Any]]
    slow: bool = False
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


REGISTRY: dict[str, dict[str, Contender]] = {"S1": {}, "S2": {}, "S4": {}}


def register(contender: Contender) -> None:
    table = REGISTRY[contender.scenario]
    if contender.key in table:
        raise ValueError(f"duplicate contender {contender.scenario}/{contender.key}")
    table[contender.key] = contender


# -- pool adapters (S1, S2) --------------------------------------------------------------------


@contextlib.contextmanager
def serial_loop() -> Iterator[Runner]:
    yield lambda fn, items: [fn(x) for x in items]


def corral_pool(chunksize: int | str, start_method: str | None) -> Adapter:
    @contextlib.contextmanager
    def adapter() -> Iterator[Runner]:
        import corral

        with corral.Pool(workers=WORKERS, start_method=start_method) as pool:
            yield lambda fn, items: pool.map(fn, items, chunksize=chunksize)

    return adapter


def mp_pool(chunksize: int | None) -> Adapter:
    @contextlib.contextmanager
    def adapter() -> Iterator[Runner]:
        import multiprocessing

        pool = multiprocessing.Pool(WORKERS)
        try:
            yield lambda fn, items: pool.map(fn, items, chunksize=chunksize)
        finally:
            pool.close()
            pool.join()

    return adapter


def cf_ppe(chunksize: int) -> Adapter:
    @contextlib.contextmanager
    def adapter() -> Iterator[Runner]:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=WORKERS) as ex:
            yield lambda fn, items: list(ex.map(fn, items, chunksize=chunksize))

    return adapter


@contextlib.contextmanager
def joblib_parallel() -> Iterator[Runner]:
    from joblib import Parallel, delayed

    with Parallel(n_jobs=WORKERS, backend="loky") as parallel:
        yield lambda fn, items: list(parallel(delayed(fn)(x) for x in items))


def loky_executor(chunksize: int) -> Adapter:
    @contextlib.contextmanager
    def adapter() -> Iterator[Runner]:
        from loky import get_reusable_executor

        ex = get_reusable_executor(max_workers=WORKERS)
        try:
            yield lambda fn, items: list(ex.map(fn, items, chunksize=chunksize))
        finally:
            ex.shutdown(wait=True)

    return adapter


@contextlib.contextmanager
def mpire_pool() -> Iterator[Runner]:
    from mpire import WorkerPool

    with WorkerPool(n_jobs=WORKERS) as pool:
        yield lambda fn, items: pool.map(fn, items, progress_bar=False)


@contextlib.contextmanager
def pebble_schedule() -> Iterator[Runner]:
    from pebble import ProcessPool

    pool = ProcessPool(max_workers=WORKERS)
    try:

        def run(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
            futures = [pool.schedule(fn, args=(x,)) for x in items]
            return [f.result() for f in futures]

        yield run
    finally:
        pool.close()
        pool.join()


def pebble_map(chunksize: int) -> Adapter:
    @contextlib.contextmanager
    def adapter() -> Iterator[Runner]:
        from pebble import ProcessPool

        pool = ProcessPool(max_workers=WORKERS)
        try:
            yield lambda fn, items: list(pool.map(fn, items, chunksize=chunksize).result())
        finally:
            pool.close()
            pool.join()

    return adapter


MP_DEFAULT = "fork (mp default)"

# key, label, kind, start method, adapter, note; S1 marks the slowest (>= 2 s a run) as slow.
ADAPTERS: list[tuple[str, str, str, str, Adapter, str]] = [
    ("serial", "serial loop", "serial", "in-process", serial_loop, ""),
    ("corral-auto", 'corral Pool.map cs="auto"', "corral", "forkserver (default)",
     corral_pool("auto", None), ""),
    ("corral-auto-fork", 'corral Pool.map cs="auto" fork', "corral", "fork",
     corral_pool("auto", "fork"), ""),
    ("corral-cs1", "corral Pool.map cs=1", "corral", "forkserver (default)",
     corral_pool(1, None), ""),
    ("mp-cs1", "mp.Pool map cs=1", "peer", MP_DEFAULT, mp_pool(1), ""),
    ("mp-auto", "mp.Pool map cs=auto", "peer", MP_DEFAULT, mp_pool(None),
     "chunksize=None: len/(4·workers)"),
    ("cf-cs1", "cf.PPE map cs=1", "peer", MP_DEFAULT, cf_ppe(1), ""),
    ("cf-cs64", "cf.PPE map cs=64", "peer", MP_DEFAULT, cf_ppe(64), ""),
    ("joblib", "joblib loky auto-batch", "peer", "loky", joblib_parallel, ""),
    ("loky-cs1", "loky map cs=1", "peer", "loky", loky_executor(1), ""),
    ("loky-cs64", "loky map cs=64", "peer", "loky", loky_executor(64), ""),
    ("mpire", "mpire map", "peer", "fork (mpire default)", mpire_pool,
     "keep_alive=False (default): each map starts and stops its workers"),
    ("pebble-schedule", "pebble schedule", "peer", MP_DEFAULT, pebble_schedule, ""),
    ("pebble-map64", "pebble map cs=64", "peer", MP_DEFAULT, pebble_map(64), ""),
]  # fmt: skip

S1_SLOW = {"cf-cs1", "loky-cs1"}


# -- S1: dispatch overhead ---------------------------------------------------------------------


LIBRARY: dict[str, tuple[str, ...]] = {
    # corral loads its public names lazily (PEP 562): import what a Pool uses.
    "corral": ("corral", "corral._api", "corral._pool"),
    "mp": ("multiprocessing.pool",),
    "cf": ("concurrent.futures.process",),
    "joblib": ("joblib", "joblib.externals.loky"),
    "loky": ("loky",),
    "mpire": ("mpire",),
    "pebble": ("pebble",),
}
"""Contender key prefix -> the modules it uses."""


def import_library(key: str) -> None:
    """Import the contender's library before any clock starts: start-up times exclude imports
    (each repetition's process is fresh, so the import would otherwise count)."""
    for module in LIBRARY.get(key.split("-")[0], ()):
        importlib.import_module(module)


def s1(adapter: Adapter, params: dict[str, Any]) -> dict[str, Any]:
    n = int(params["n"])
    items = list(range(n))
    warm = list(range(WARM_ITEMS))
    t0 = time.perf_counter()
    with adapter() as run:
        if run(inc, warm) != [x + 1 for x in warm]:
            raise AssertionError("wrong results in the warm-up map")
        t1 = time.perf_counter()
        out = run(inc, items)
        t2 = time.perf_counter()
    t3 = time.perf_counter()
    if out != [x + 1 for x in items]:
        bad = sum(1 for a, b in zip(out, items, strict=False) if a != b + 1) + abs(len(out) - n)
        raise AssertionError(f"wrong results: {bad} of {n} items (len {len(out)})")
    return {"wall": t2 - t1, "n": n, "startup": t1 - t0, "shutdown": t3 - t2}


# -- S2: CPU-bound scaling ---------------------------------------------------------------------


def _serial_calls(items: list[int]) -> tuple[float, list[int]]:
    t0 = time.perf_counter()
    out = [burn(x) for x in items]
    return time.perf_counter() - t0, out


def s2(adapter: Adapter, params: dict[str, Any]) -> dict[str, Any]:
    count = int(params["tasks"])
    items = s2_items(int(params["n_turns"]), count)
    warm = list(range(WARM_ITEMS))
    t0 = time.perf_counter()
    with adapter() as run:
        if run(inc, warm) != [x + 1 for x in warm]:
            raise AssertionError("wrong results in the warm-up map")
        t1 = time.perf_counter()
        before_s, before = _serial_calls(items[:PAIRED_CALLS])
        t2 = time.perf_counter()
        out = run(burn, items)
        t3 = time.perf_counter()
        after_s, after = _serial_calls(items[-PAIRED_CALLS:])
    wall = t3 - t2
    # The serial calls double as a correctness check on 2 * PAIRED_CALLS of the results.
    if len(out) != count or out[:PAIRED_CALLS] != before or out[-PAIRED_CALLS:] != after:
        raise AssertionError(f"wrong results (len {len(out)} of {count})")
    per_task = (before_s + after_s) / (2 * PAIRED_CALLS)
    return {
        "wall": wall,
        "n": count,
        "startup": t1 - t0,
        "per_task_before": before_s / PAIRED_CALLS,
        "per_task_after": after_s / PAIRED_CALLS,
        "paired_efficiency": count * per_task / (WORKERS * wall),
    }


def _measure(
    scenario_fn: Callable[[Any, dict[str, Any]], dict[str, Any]], key: str, how: Any
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A registry entry's function: import the library, then measure."""

    def measure(params: dict[str, Any]) -> dict[str, Any]:
        import_library(key)
        return scenario_fn(how, params)

    return measure


for _key, _label, _kind, _method, _adapter, _note in ADAPTERS:
    register(Contender("S1", _key, _label, _kind, _method,
                       _measure(s1, _key, _adapter), slow=_key in S1_SLOW, note=_note))
    register(Contender("S2", _key, _label, _kind, _method,
                       _measure(s2, _key, _adapter), note=_note))  # fmt: skip


# -- S4: start-up and shutdown -----------------------------------------------------------------
# Each function starts a pool, gets the first result of one trivial task, and returns
# (that result, a callable that shuts the pool down).

Started = tuple[Any, Callable[[], None] | None]


def s4_corral_pool(start_method: str | None) -> Callable[[], Started]:
    def start() -> Started:
        import corral

        pool = corral.Pool(workers=WORKERS, start_method=start_method)
        return pool.submit(inc, 1).result(), pool.close

    return start


def s4_corral_map() -> Started:
    import corral

    return corral.map(inc, [1, 2], workers=WORKERS)[0], None  # shut down inside the call


def s4_mp_pool(method: str) -> Callable[[], Started]:
    def start() -> Started:
        import multiprocessing

        pool = multiprocessing.get_context(method).Pool(WORKERS)

        def stop() -> None:
            pool.close()
            pool.join()

        return pool.apply_async(inc, (1,)).get(), stop

    return start


def s4_cf_ppe() -> Started:
    from concurrent.futures import ProcessPoolExecutor

    ex = ProcessPoolExecutor(max_workers=WORKERS)
    return ex.submit(inc, 1).result(), lambda: ex.shutdown(wait=True)


def s4_joblib() -> Started:
    from joblib import Parallel, delayed

    parallel = Parallel(n_jobs=WORKERS, backend="loky")
    parallel.__enter__()
    value = parallel([delayed(inc)(1)])[0]
    # joblib keeps its loky executor for reuse after the Parallel ends; shutting that down
    # is what frees the workers.
    executor = getattr(parallel._backend, "_workers", None)

    def stop() -> None:
        parallel.__exit__(None, None, None)
        if executor is not None:
            executor.shutdown(wait=True)

    return value, stop


def s4_loky() -> Started:
    from loky import get_reusable_executor

    ex = get_reusable_executor(max_workers=WORKERS)
    return ex.submit(inc, 1).result(), lambda: ex.shutdown(wait=True)


def s4_mpire() -> Started:
    from mpire import WorkerPool

    pool = WorkerPool(n_jobs=WORKERS)
    return pool.map(inc, [1], progress_bar=False)[0], pool.terminate


def s4_pebble() -> Started:
    from pebble import ProcessPool

    pool = ProcessPool(max_workers=WORKERS)

    def stop() -> None:
        pool.close()
        pool.join()

    return pool.schedule(inc, args=(1,)).result(), stop


# corral titles its fork server "corral fork server [pool N]" (setproctitle), hiding the
# "forkserver" of multiprocessing's command line.
HELPER_MARKS = ("forkserver", "corral fork server", "resource_tracker", "semaphore_tracker")


def pool_processes() -> tuple[list[int], list[str]]:
    """This process's descendants that are not start-method helpers (multiprocessing's fork
    server and resource tracker, loky's resource tracker): pids and command lines.

    Helpers are recognised among direct children only: a worker forked by the fork server has
    the fork server's command line, but it is a grandchild."""
    import psutil

    me = psutil.Process()
    helpers = set()
    for child in me.children():
        with contextlib.suppress(psutil.Error):
            if any(m in " ".join(child.cmdline()) for m in HELPER_MARKS):
                helpers.add(child.pid)
    pids, cmds = [], []
    for proc in me.children(recursive=True):
        if proc.pid in helpers:
            continue
        with contextlib.suppress(psutil.Error):
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            pids.append(proc.pid)
            cmds.append(" ".join(proc.cmdline())[:120])
    return pids, cmds


def s4(start: Callable[[], Started], params: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    value, stop = start()
    t1 = time.perf_counter()
    if value != 2:
        raise AssertionError(f"wrong first result {value!r}")
    procs, _ = pool_processes()
    t2 = time.perf_counter()
    if stop is not None:
        stop()
    t3 = time.perf_counter()
    time.sleep(0.2)
    left, left_cmds = pool_processes()
    return {
        "first": t1 - t0,
        "shutdown": t3 - t2 if stop is not None else None,
        "pool_processes": len(procs),
        "left": len(left),
        "left_cmdlines": left_cmds,
    }


S4_CONTENDERS: list[tuple[str, str, str, str, Callable[[], Started], str]] = [
    ("mp-fork", "mp.Pool fork", "peer", "fork", s4_mp_pool("fork"), "baseline"),
    ("corral-pool", "corral Pool", "corral", "forkserver (default)", s4_corral_pool(None),
     "includes starting the fork server"),
    ("corral-pool-fork", "corral Pool fork", "corral", "fork", s4_corral_pool("fork"), ""),
    ("corral-map", "corral.map on 2 items", "corral", "forkserver (default)", s4_corral_map,
     "temporary pool: the call includes start-up and shutdown"),
    ("mp-spawn", "mp.Pool spawn", "peer", "spawn", s4_mp_pool("spawn"), ""),
    ("cf", "cf.PPE", "peer", MP_DEFAULT, s4_cf_ppe, ""),
    ("joblib", "joblib loky", "peer", "loky", s4_joblib,
     "shutdown includes the reusable loky executor's"),
    ("loky", "loky reusable executor", "peer", "loky", s4_loky, ""),
    ("mpire", "mpire map", "peer", "fork (mpire default)", s4_mpire,
     "keep_alive=False: workers stop at the end of map"),
    ("pebble", "pebble schedule", "peer", MP_DEFAULT, s4_pebble, ""),
]  # fmt: skip

for _key, _label, _kind, _method, _start, _note in S4_CONTENDERS:
    register(Contender("S4", _key, _label, _kind, _method,
                       _measure(s4, _key, _start), note=_note))  # fmt: skip

BASELINE = {"S1": "serial", "S2": "serial", "S4": "mp-fork"}
