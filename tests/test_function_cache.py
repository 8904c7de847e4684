"""The function table of a warm Pool: a function is pickled per batch, so a batch sees the
globals and closures as they are when it is submitted (as ``corral.map`` and a serial loop
do); identical bytes are sent to a worker once; what workers and the coordinator keep of
finished batches is bounded by bytes; a function or argument that pickles big warns once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import psutil
import pytest

import corral
from corral import _functions

SCRIPT = Path(__file__).parent / "scripts" / "warm_pool_globals.py"
RUN_WAIT = 120.0
MiB = 1 << 20

# A module that is not importable: cloudpickle pickles its functions by value, with the
# globals they read, as it does for functions of a script's ``__main__``.
DYNAMIC_SOURCE = """
CONFIG = {"scale": 1}

def scaled(x):
    return x * CONFIG["scale"]
"""


def dynamic_module() -> dict[str, object]:
    namespace: dict[str, object] = {"__name__": "corral_test_not_importable"}
    exec(DYNAMIC_SOURCE, namespace)
    return namespace


# -- a task function that counts how many times each process unpickled it ------------------

LOADS: dict[str, int] = {}
"""In each process: tag -> how many times a CountsLoads of that tag was unpickled there."""


def _load_counting(tag: str, payload: bytes) -> CountsLoads:
    LOADS[tag] = LOADS.get(tag, 0) + 1
    return CountsLoads(tag, payload)


class CountsLoads:
    def __init__(self, tag: str, payload: bytes = b"") -> None:
        self.tag = tag
        self.payload = payload

    def __reduce__(self) -> tuple[object, ...]:
        return (_load_counting, (self.tag, self.payload))

    def __call__(self, _: object) -> tuple[int, int]:
        return os.getpid(), LOADS.get(self.tag, 0)


def loads_per_worker(results: list[tuple[int, int]]) -> dict[int, int]:
    return dict(results)


# -- item: globals and closures are read as they are when the batch is submitted -----------


def test_a_warm_pool_sees_globals_changed_between_maps():
    module = dynamic_module()
    scaled, config = module["scaled"], module["CONFIG"]
    items = list(range(5))
    with corral.Pool(workers=2, chunksize=1) as pool:
        assert pool.map(scaled, items) == items
        config["scale"] = 10  # type: ignore[index]
        assert pool.map(scaled, items) == [10 * x for x in items]
        assert corral.map(scaled, items, workers=2) == [10 * x for x in items]
        assert corral.map(scaled, items, backend="serial") == [10 * x for x in items]
        config["scale"] = 3  # type: ignore[index]
        assert pool.submit(scaled, 2).result() == 6
        tasks = [corral.Task(scaled, (x,)) for x in items]
        assert pool.run(tasks).results == [3 * x for x in items]
        assert list(pool.imap(scaled, items)) == [3 * x for x in items]


def test_a_warm_pool_sees_the_new_value_of_a_closure_cell():
    items = list(range(4))
    with corral.Pool(workers=2, chunksize=1) as pool:
        got = []
        for offset in (1, 2, 2, 7):
            got.append(pool.map(lambda x: x + offset, items))  # noqa: B023 - on purpose
    assert got == [[x + offset for x in items] for offset in (1, 2, 2, 7)]


@pytest.mark.parametrize("start_method", ["fork", "forkserver", "spawn"])
def test_a_script_gets_the_same_results_from_a_pool_map_and_a_loop(start_method):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), start_method],
        capture_output=True,
        text=True,
        timeout=RUN_WAIT,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    want = [[x * scale for x in range(6)] for scale in (1, 10, 10, 3)]
    assert out == {"pool": want, "map": want, "serial": want, "loop": want}


# -- identical bytes travel to a worker once ------------------------------------------------


def test_identical_bytes_are_sent_to_each_worker_once():
    with corral.Pool(workers=2, chunksize=1) as pool:
        first = loads_per_worker(pool.map(CountsLoads("same"), range(8)))
        again = loads_per_worker(pool.map(CountsLoads("same"), range(8)))  # a new object
        assert set(first.values()) == {1}
        assert set(again.values()) == {1}  # not unpickled again
        changed = loads_per_worker(pool.map(CountsLoads("same", b"new state"), range(8)))
        assert set(changed.values()) == {2}  # new bytes: sent and unpickled again
        back = loads_per_worker(pool.map(CountsLoads("same"), range(8)))
        assert set(back.values()) == {2}  # the first bytes were kept (small and recent)


def test_a_big_function_is_dropped_from_workers_when_its_batch_ends():
    big = CountsLoads("big", b"x" * (2 * _functions.KEEP_BYTES_EACH))
    with corral.Pool(workers=2, chunksize=1) as pool:
        first = loads_per_worker(pool.map(big, range(8)))
        again = loads_per_worker(pool.map(big, range(8)))
    assert set(first.values()) == {1}
    assert set(again.values()) == {2}  # dropped after the first batch, sent again


# -- memory is bounded across many batches of big closures ----------------------------------


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def test_big_closures_do_not_pile_up_in_workers_or_the_coordinator():
    """40 batches, each of a lambda over a new 20 MiB array: without a bound, every process
    kept 32 of them (~700 MiB each); now each keeps what its running batch needs."""
    size = 20 * MiB // 8
    baseline: dict[int, int] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the size warning: tested below
        with corral.Pool(workers=2, chunksize=1) as pool:
            for i in range(40):
                big = np.full(size, float(i))
                got = pool.map(lambda x: x + big[0], range(4))  # noqa: B023 - on purpose
                assert got == [x + float(i) for x in range(4)]
                if i == 4:  # warm: allocator pools and imports settled
                    pids = [os.getpid()] + [s.pid for s in pool.engine.slots]
                    baseline = {pid: rss(pid) for pid in pids}
            grown = {pid: (rss(pid) - before) / MiB for pid, before in baseline.items()}
    # 35 more batches would add ~700 MiB per process if kept; a few in flight are fine.
    assert all(growth < 200 for growth in grown.values()), grown


# -- warnings for what pickles big ----------------------------------------------------------


def test_a_function_that_pickles_big_warns_once_suggesting_share():
    big = np.ones(17 * MiB // 8)

    def add_big(x):
        return x + big[0]

    with corral.Pool(workers=2) as pool, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert pool.map(add_big, [1, 2]) == [2.0, 3.0]
        assert pool.map(add_big, [3]) == [4.0]
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1, messages
    assert "add_big" in messages[0] and "MiB" in messages[0]
    assert "corral.share" in messages[0]
    assert caught[0].filename == __file__  # attributed to the caller's line


def test_an_argument_that_pickles_big_warns_once_naming_it():
    big = np.ones(17 * MiB // 8)
    with corral.Pool(workers=2) as pool, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert pool.map(np.sum, [np.ones(3), big, big], chunksize=1)[0] == 3.0
        pool.run([corral.Task(np.sum, (big,), key="the-big-one")])
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1, messages
    assert "item 1" in messages[0] and "MiB" in messages[0] and "corral.share" in messages[0]


def test_small_functions_and_arguments_do_not_warn():
    with corral.Pool(workers=2) as pool, warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pool.map(abs, [-1, np.ones(1000)], chunksize=1)[0] == 1


# -- the table itself (no processes) -------------------------------------------------------


def test_the_table_keeps_idle_functions_within_its_byte_budget():
    table = _functions.FunctionTable(pickle=True)
    payload = b"y" * (_functions.KEEP_BYTES_EACH // 2)
    ids = [table.acquire(CountsLoads(f"t{i}", payload)) for i in range(40)]
    for fn_id in ids:
        table.release(fn_id)
    gone = table.forgotten()
    assert len(ids) - len(gone) <= _functions.KEEP_IDLE
    assert table.idle_bytes() <= _functions.KEEP_IDLE_BYTES
    assert gone == ids[: len(gone)]  # the least recently used go first
    assert table.forgotten() == []


def test_the_table_reuses_ids_only_for_identical_bytes():
    table = _functions.FunctionTable(pickle=True)
    a = table.acquire(CountsLoads("a"))
    assert table.acquire(CountsLoads("a")) == a
    assert table.acquire(CountsLoads("a", b"other")) != a
    assert table.acquire(abs) == table.acquire(abs)


FINGERPRINTED_SOURCE = """
CONFIG = {"scale": 1, "nested": {"k": [1]}}

def helper(x):
    return x + CONFIG["nested"]["k"][0]

def scaled(x, offset=0):
    return helper(x) * CONFIG["scale"] + offset

def make_counter():
    n = 1
    def read(x):
        return x + n
    def bump():
        nonlocal n
        n += 1
    return read, bump
"""


def test_the_same_object_is_pickled_again_only_when_what_it_reads_changed():
    module: dict[str, object] = {"__name__": "corral_test_fingerprinted"}
    exec(FINGERPRINTED_SOURCE, module)
    fn, config = module["scaled"], module["CONFIG"]
    table = _functions.FunctionTable(pickle=True)

    def acquired() -> int:
        fn_id = table.acquire(fn)
        table.release(fn_id)
        return fn_id

    first = acquired()
    assert acquired() == first and table.pickles == 2  # seen again: pickled, fingerprinted
    assert acquired() == first and table.pickles == 2  # the same fingerprint: not pickled
    assert acquired() == first and table.pickles == 2
    config["nested"]["k"][0] = 2  # type: ignore[index] - read by the helper it calls
    second = acquired()
    assert second != first and table.pickles == 3
    fn.__defaults__ = (5,)  # type: ignore[attr-defined]
    assert acquired() not in (first, second)
    module["helper"] = abs  # a global rebound
    assert len({first, second, acquired()}) == 3
    read, bump = module["make_counter"]()  # type: ignore[operator]
    before = [table.acquire(read), table.acquire(read)]
    bump()  # a closure cell changed
    assert table.acquire(read) != before[0] == before[1]
