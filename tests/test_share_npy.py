"""Sharing a file the user already has, in place (issue 15): ``corral.share(np.load(path,
mmap_mode="r"))`` copies nothing and creates no segment; workers map the same file read-only,
see the same values, and a file that changed or went away is a clear error, never other data.
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import psutil
import pytest

import corral
from corral._sharing import segments as _shm
from corral._sharing import share as _share

MIB = 1 << 20


# -- tasks (module level: forkserver and spawn workers import them by reference) -------------


def total(args: tuple[corral.Shared, int]) -> float:
    handle, _ = args
    return float(handle.value.sum())


def reading_cost(handle: corral.Shared) -> dict[str, float]:
    """Read every byte of the shared array in this worker; how its memory grew meanwhile.

    PSS splits a page among the processes that map it; anonymous memory is what a copy would
    take. Neither may grow by the array's size if the worker reads the file's pages in place."""
    me = psutil.Process()
    before = me.memory_full_info().pss, _anonymous()
    value = handle.value
    checksum = float(value.sum())  # touches every page
    after = me.memory_full_info().pss, _anonymous()
    return {
        "pss": after[0] - before[0],
        "anon": after[1] - before[1],
        "sum": checksum,
        "writeable": float(value.flags.writeable),
        "mapped": float(any(m.path == handle.path for m in me.memory_maps())),
    }


def _anonymous() -> int:
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith("Anonymous:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no Anonymous: line in smaps_rollup")


def first_item(handle: corral.Shared) -> float:
    return float(handle.value.flat[0])


def crash_on(args: tuple[corral.Shared, int]) -> float:
    handle, i = args
    if i == 2:
        os._exit(3)
    return float(handle.value[i])


# -- helpers ---------------------------------------------------------------------------------


def segments_of_this_process() -> list[str]:
    return _shm.owned_by({os.getpid()}) + _shm.owned_by({os.getpid()}, _shm.tempfile.gettempdir())


def through_pickle(handle: corral.Shared) -> object:
    """``value`` as a process that unpickles the handle reads it (a new mapping, checked)."""
    copy = pickle.loads(pickle.dumps(handle))
    _share._attached.pop(copy._segment.key, None)  # as in a process that never read it
    return copy.value


@pytest.fixture
def npy(tmp_path):
    def save(arr: np.ndarray, name: str = "data.npy") -> str:
        path = str(tmp_path / name)
        np.save(path, arr)
        return path

    return save


# -- in place, in real workers ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_workers_read_the_file_in_place_without_copying_it(npy, start_method):
    arr = np.arange(32 * MIB // 8, dtype=np.float64)
    mapped = np.load(npy(arr), mmap_mode="r")
    expected = float(arr.sum())
    assert float(mapped.sum()) == expected  # this process maps every page too, throughout
    with corral.share(mapped) as handle:
        assert segments_of_this_process() == []  # nothing copied, nothing created
        got = corral.map(reading_cost, [handle, handle], workers=2, start_method=start_method)
        assert segments_of_this_process() == []
    for cost in got:
        assert cost["sum"] == expected
        assert cost["writeable"] == 0.0 and cost["mapped"] == 1.0
        # A copy would add the whole array (32 MiB) to both; the file's pages are shared
        # with this process at least, so the worker's share of them is at most half.
        assert cost["anon"] < arr.nbytes / 4, cost
        assert cost["pss"] < arr.nbytes * 0.75, cost


@pytest.mark.parametrize("start_method", ["forkserver", "spawn", "fork"])
def test_slices_orders_and_raw_memmaps_are_the_same_values(npy, tmp_path, start_method):
    grid = np.arange(6000, dtype=np.int32).reshape(200, 30)
    c_order = np.load(npy(grid), mmap_mode="r")
    f_order = np.load(npy(np.asfortranarray(grid), "f.npy"), mmap_mode="r")
    raw = tmp_path / "raw.bin"
    raw.write_bytes(b"\x07" * 100 + grid.tobytes())
    at_offset = np.memmap(raw, dtype=np.int32, mode="r", offset=100, shape=grid.shape)
    cases = {
        "whole": (c_order, grid),
        "rows": (c_order[50:120], grid[50:120]),
        "fortran": (f_order, grid),
        "raw at an odd offset": (at_offset, grid),
    }
    handles = {name: corral.share(m) for name, (m, _) in cases.items()}
    for handle in handles.values():
        assert "mapped from" in repr(handle)
    got = corral.map(
        read_whole, list(handles.values()), workers=2, start_method=start_method, chunksize=1
    )
    for (name, (_, want)), value in zip(cases.items(), got, strict=True):
        np.testing.assert_array_equal(value, want, err_msg=name)
    for handle in handles.values():
        handle.release()


def read_whole(handle: corral.Shared) -> np.ndarray:
    return np.array(handle.value)


def test_value_is_read_only_and_a_view_of_the_file(npy):
    arr = np.linspace(0, 1, 1000)
    path = npy(arr)
    with corral.share(np.load(path, mmap_mode="r")) as handle:
        value = through_pickle(handle)
        assert isinstance(value, np.ndarray) and not value.flags.writeable
        with pytest.raises(ValueError):
            value[0] = 5.0
        with pytest.raises(ValueError):
            value.flags.writeable = True
        np.testing.assert_array_equal(value, arr)
        assert handle.path == path and handle.nbytes == os.path.getsize(path)


def test_memmaps_that_may_be_written_or_are_strided_are_copied(npy):
    path = npy(np.arange(100.0))
    for mapped in (
        np.load(path, mmap_mode="r+"),  # the owner may write while tasks read
        np.load(path, mmap_mode="c"),  # the owner's changes are not in the file
        np.load(path, mmap_mode="r")[::3],  # strided
    ):
        with corral.share(mapped) as handle:
            assert "mapped from" not in repr(handle)
            value = through_pickle(handle)  # made now, as for any array
            np.testing.assert_array_equal(value, np.asarray(mapped))
            assert os.path.exists(handle.path) and handle.path != path


# -- lifetime and a file that changes --------------------------------------------------------


def test_release_stops_the_handle_and_never_removes_the_file(npy):
    path = npy(np.arange(10.0))
    handle = corral.share(np.load(path, mmap_mode="r"))
    other = corral.share(np.load(path, mmap_mode="r")[2:])  # the same file: another share
    assert handle.name != other.name
    assert float(through_pickle(other)[0]) == 2.0 and float(through_pickle(handle)[0]) == 0.0
    handle.release()
    handle.release()  # idempotent
    assert os.path.exists(path)
    with pytest.raises(corral.CorralError, match="released"):
        pickle.dumps(handle)
    with pytest.raises(corral.CorralError, match="released"):
        _ = handle.value
    assert float(through_pickle(other)[0]) == 2.0  # the other share is untouched
    del other  # collected: released the same way
    assert os.path.exists(path)


def test_a_file_that_changed_or_went_away_is_a_clear_error(npy, tmp_path):
    arr = np.arange(1000.0)
    path = npy(arr)
    grown = corral.share(np.load(path, mmap_mode="r"))
    replaced = corral.share(np.load(path, mmap_mode="r"))
    np.save(path, np.arange(2000.0))  # rewritten in place: another size
    with pytest.raises(corral.CorralError, match=r"changed after it was shared.*size"):
        through_pickle(grown)
    new = str(tmp_path / "new.npy")
    np.save(new, np.arange(2000.0))
    os.replace(new, path)  # another file under the same name
    with pytest.raises(corral.CorralError, match=r"changed after it was shared.*inode"):
        through_pickle(replaced)
    os.unlink(path)
    with pytest.raises(corral.CorralError, match="is gone"):
        through_pickle(grown)
    grown.release()
    replaced.release()


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_a_worker_gets_the_error_for_a_removed_file(npy, start_method):
    path = npy(np.arange(10.0))
    with corral.share(np.load(path, mmap_mode="r")) as handle:
        os.unlink(path)  # (this process's own mapping keeps the pages; workers cannot)
        with pytest.raises(corral.BatchError) as info:
            corral.map(first_item, [handle], workers=1, start_method=start_method)
    error = str(info.value.report.failures[0].error)
    assert "is gone" in error and path in error


def test_a_crashing_worker_leaves_the_file_and_the_share_as_they_were(npy):
    arr = np.arange(8.0)
    path = npy(arr)
    before = os.stat(path)
    with corral.share(np.load(path, mmap_mode="r")) as handle:
        with corral.Pool(workers=2) as pool:
            with pytest.raises(corral.BatchError) as info:
                pool.map(crash_on, [(handle, i) for i in range(4)], chunksize=1)
            assert isinstance(info.value.report.failures[0].error, corral.WorkerCrashed)
            assert pool.map(crash_on, [(handle, i) for i in (0, 1, 3)]) == [0.0, 1.0, 3.0]
        assert segments_of_this_process() == []
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )
    np.testing.assert_array_equal(np.load(path), arr)
