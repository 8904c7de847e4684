"""``corral.share``: data copied once into shared memory, read by tasks as read-only zero-copy
views, attached once per worker, and never left behind in /dev/shm.

Every test runs under conftest's leak guards: no process and no corral segment owned by the
test process or its descendants may outlive a test.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
import psutil
import pytest
from _procs import alive, marked, run_script, wait_until
from _tasks import outcomes_of_writes

import corral
from corral._sharing import segments as _shm
from corral._sharing import share as _share

SCRIPT = Path(__file__).parent / "scripts" / "share_batch.py"
EXIT_WAIT = 30.0


# -- what tasks do with a handle (module level: workers import them by reference) ------------


def read_value(handle: corral.Shared) -> object:
    return handle.value


def read_item(args: tuple[corral.Shared, str]) -> object:
    handle, key = args
    return handle.value[key]


def attach_info(args: tuple[corral.Shared, int]) -> tuple[int, int, int]:
    handle, _ = args
    return os.getpid(), id(handle.value), _share.attach_count()


def try_writes(handle: corral.Shared) -> dict[str, str]:
    """Attempt every kind of write on the shared views; the error type of each (or 'wrote')."""
    value = handle.value
    attempts = {
        "array": lambda: value["array"].__setitem__(0, 99.0),
        "array flag": lambda: setattr(value["array"].flags, "writeable", True),
        "frame iloc": lambda: value["frame"].iloc.__setitem__((0, 0), 99.0),
        "frame values": lambda: value["frame"]["x"].to_numpy().__setitem__(0, 99.0),
        "bytes": lambda: value["bytes"].__setitem__(0, 1),
    }
    return outcomes_of_writes(attempts)


def fail_on(args: tuple[corral.Shared, int]) -> float:
    handle, x = args
    if x == 2:
        raise ValueError("task 2 fails")
    return float(handle.value[x])


def crash_on(args: tuple[corral.Shared, int]) -> float:
    handle, x = args
    if x == 2:
        os._exit(3)
    return float(handle.value[x])


def value_and_segment(args: tuple[corral.Shared, int]) -> tuple[float, bool]:
    handle, x = args
    return float(handle.value[x]), os.path.exists(handle.path)


def cached_segments(args: tuple[corral.Shared, int]) -> tuple[int, int]:
    handle, _ = args
    handle.value  # noqa: B018 - attaches
    return os.getpid(), len(_share._attached)


# -- helpers ---------------------------------------------------------------------------------


def gone(handle: corral.Shared) -> bool:
    return not os.path.exists(handle.path)


def every_kind_frame() -> pd.DataFrame:
    n = 50
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "float": rng.random(n),
            "int": np.arange(n, dtype=np.int32),
            "bool": np.arange(n) % 3 == 0,
            "when": pd.date_range("2024-01-01", periods=n, freq="h"),
            "when_tz": pd.date_range("2024-01-01", periods=n, freq="h", tz="Europe/Paris"),
            "delta": pd.to_timedelta(np.arange(n), unit="s"),
            "category": pd.Categorical(rng.choice(["low", "mid", "high"], n)),
            "nullable": pd.array([None if i % 7 == 0 else i for i in range(n)], dtype="Int64"),
            "text": pd.Series([None if i % 5 == 0 else f"s{i}" for i in range(n)], dtype="str"),
            "objects": pd.Series([f"o{i}" for i in range(n)], dtype=object),
        },
        index=pd.Index([f"row{i}" for i in range(n)], name="key"),
    )


def assert_same_frame(got: pd.DataFrame, want: pd.DataFrame) -> None:
    # Object columns of strings come back as pandas' string dtype: values are compared.
    pd.testing.assert_frame_equal(got, want, check_dtype=False, check_index_type=False)
    for column in want.columns:
        if want[column].dtype != object:
            assert got[column].dtype == want[column].dtype, column


ARRAYS = {
    "float64": np.linspace(0, 1, 1000),
    "int8": np.arange(-100, 100, dtype=np.int8),
    "bool": np.arange(30) % 2 == 0,
    "2d": np.arange(60, dtype=np.float32).reshape(6, 10),
    "fortran": np.asfortranarray(np.arange(60.0).reshape(6, 10)),
    "strided": np.arange(100.0)[::3],
    "datetime": np.arange("2024-01-01", "2024-02-01", dtype="datetime64[D]"),
    "structured": np.array([(1, 2.0), (3, 4.0)], dtype=[("a", "i4"), ("b", "f8")]),
    "empty": np.zeros((0, 3)),
}


# -- values ----------------------------------------------------------------------------------


def test_numpy_arrays_read_in_workers_equal_the_originals():
    with corral.share(ARRAYS) as handle:
        got = corral.map(read_item, [(handle, k) for k in ARRAYS], workers=2, chunksize=1)
    for (name, want), value in zip(ARRAYS.items(), got, strict=True):
        assert value.dtype == want.dtype, name
        np.testing.assert_array_equal(value, want, err_msg=name)


def test_dataframe_of_every_column_kind_reads_equal_in_workers():
    frame = every_kind_frame()
    with corral.share(frame) as handle:
        (got,) = corral.map(read_value, [handle], workers=2)
    assert_same_frame(got, frame)
    assert str(got["objects"].dtype) in ("str", "string")


def test_homogeneous_frame_series_bytes_and_containers_read_equal_in_workers():
    frame = pd.DataFrame(np.arange(40.0).reshape(10, 4), columns=list("abcd"))
    data = {
        "frame": frame,
        "series": pd.Series(np.arange(5), index=[10, 20, 30, 40, 50], name="s"),
        "bytes": b"\x00\x01binary",
        "nested": [np.arange(3), (b"xy", {"deep": np.ones(2)})],
        "scalars": (1, 2.5, "label", None, True),
    }
    with corral.share(data) as handle:
        got = dict(
            zip(data, corral.map(read_item, [(handle, k) for k in data], workers=2), strict=True)
        )
    pd.testing.assert_frame_equal(got["frame"], frame)
    pd.testing.assert_series_equal(got["series"], data["series"])
    assert got["bytes"] == data["bytes"]
    np.testing.assert_array_equal(got["nested"][0], np.arange(3))
    assert got["nested"][1][0] == b"xy"
    np.testing.assert_array_equal(got["nested"][1][1]["deep"], np.ones(2))
    assert got["scalars"] == data["scalars"]


def test_string_columns_need_pyarrow_only_when_present():
    frame = pd.DataFrame({"x": np.arange(3.0), "cat": pd.Categorical(["a", "b", "a"])})
    with corral.share(frame) as handle:
        (got,) = corral.map(read_value, [handle], workers=2)
    pd.testing.assert_frame_equal(got, frame)


# -- read-only, zero-copy, attached once --------------------------------------------------


def test_views_in_workers_are_read_only():
    frame = pd.DataFrame({"x": np.arange(5.0), "y": np.arange(5)})
    data = {"array": np.arange(10.0), "frame": frame, "bytes": b"abc"}
    with corral.share(data) as handle:
        (attempts,) = corral.map(try_writes, [handle], workers=2)
        assert handle.value["array"][0] == 0.0  # nothing changed in the segment
        assert handle.value["frame"]["x"].iloc[0] == 0.0
    assert attempts == {
        "array": "ValueError",
        "array flag": "ValueError",
        "frame iloc": "ValueError",
        "frame values": "ValueError",
        "bytes": "TypeError",
    }


def test_value_is_a_view_of_the_segment_not_a_copy():
    frame = every_kind_frame()[["float", "int", "when", "category", "nullable"]]
    with corral.share({"a": np.arange(100.0), "f": frame}) as handle:
        value = handle.value
        assert not value["a"].flags.owndata and not value["a"].flags.writeable
        for column in ("float", "int", "when"):
            assert not value["f"][column].to_numpy().flags.writeable, column
        assert not value["f"]["category"].cat.codes.to_numpy().flags.writeable
        del value


def test_each_worker_attaches_once_and_reuses_the_value():
    with corral.share(np.arange(1000.0)) as handle:
        got = corral.map(attach_info, [(handle, i) for i in range(20)], workers=2, chunksize=1)
    by_worker: dict[int, set[tuple[int, int]]] = {}
    for pid, ident, attaches in got:
        by_worker.setdefault(pid, set()).add((ident, attaches))
    for pid, seen in by_worker.items():
        assert seen == {next(iter(seen))}, f"worker {pid} attached more than once: {seen}"
        assert next(iter(seen))[1] == 1


def test_handle_pickles_to_a_few_hundred_bytes():
    with corral.share(np.zeros(1_000_000)) as handle:
        assert len(pickle.dumps(handle)) < 400
        assert len(cloudpickle.dumps(handle)) < 400
        again = pickle.loads(pickle.dumps(handle))
        assert again.path == handle.path
        np.testing.assert_array_equal(again.value, np.zeros(1_000_000))


def test_a_worker_forgets_segments_that_were_released():
    with corral.Pool(workers=2) as pool:
        with corral.share(np.arange(10.0)) as first:
            pool.map(cached_segments, [(first, i) for i in range(4)], chunksize=1)
        with corral.share(np.arange(20.0)) as second:
            got = pool.map(cached_segments, [(second, i) for i in range(4)], chunksize=1)
    assert {count for _, count in got} == {1}


def test_serial_backend_reads_the_same_views_in_process():
    with corral.share(np.arange(10.0)) as handle:
        (got,) = corral.map(read_value, [handle], backend="serial")
        assert not got.flags.writeable
        np.testing.assert_array_equal(got, np.arange(10.0))
        del got


def test_shared_empty_is_filled_in_place_and_read_in_workers():
    with corral.Shared.empty((100, 2), "int64") as handle:
        handle.writable()[:] = np.arange(200).reshape(100, 2)
        (got,) = corral.map(read_value, [handle], workers=2)
    np.testing.assert_array_equal(got, np.arange(200).reshape(100, 2))


def test_shared_empty_lives_until_it_is_released():
    handle = corral.Shared.empty(10)
    assert corral.map(fail_on, [(handle, 1)], workers=2) == [0.0]
    assert not gone(handle)
    handle.release()
    assert gone(handle)


def test_writable_is_only_for_shared_empty():
    with corral.share(np.arange(3.0)) as handle, pytest.raises(corral.CorralError):
        handle.writable()


# -- lifetime --------------------------------------------------------------------------------


def test_a_share_outlives_the_map_that_carried_it_until_it_is_dropped():
    handle = corral.share(np.arange(100.0))
    got = corral.map(value_and_segment, [(handle, i) for i in (0, 1, 3)], workers=2)
    assert got == [(0.0, True), (1.0, True), (3.0, True)]  # forkserver workers: a segment
    assert not gone(handle)
    again = corral.map(value_and_segment, [(handle, i) for i in (4, 5)], workers=2)
    assert again == [(4.0, True), (5.0, True)]  # the same segment, a second temporary pool
    path = handle.path
    del handle  # the last reference: collected, so released
    assert not os.path.exists(path)


def test_a_released_handle_fails_its_tasks_with_a_clear_error():
    handle = corral.share(np.arange(100.0))
    corral.map(fail_on, [(handle, 0)] * 2, workers=2)
    handle.release()
    with pytest.raises(corral.BatchError) as info:
        corral.map(fail_on, [(handle, 0)] * 2, workers=2)
    assert "was released" in str(info.value.report.failures[0].error)
    with pytest.raises(corral.CorralError, match="was released"):
        handle.value  # noqa: B018


def test_a_pinned_handle_serves_several_runs_then_goes_with_its_block():
    with corral.share(np.arange(100.0)) as handle:
        for _ in range(2):
            assert corral.map(fail_on, [(handle, 1)] * 2, workers=2) == [1.0, 1.0]
        assert not gone(handle)
    assert gone(handle)


def test_a_share_outlives_the_pool_that_carried_it_until_released():
    handle = corral.share(np.arange(100.0))
    with corral.Pool(workers=2) as pool:
        assert pool.map(fail_on, [(handle, 1)] * 2) == [1.0, 1.0]
        assert pool.map(fail_on, [(handle, 3)] * 2) == [3.0, 3.0]
    assert not gone(handle)
    with corral.Pool(workers=2) as pool:
        assert pool.map(fail_on, [(handle, 4)]) == [4.0]
    handle.release()
    assert gone(handle)


def pick(handle: corral.Shared, x: int) -> float:
    return float(handle.value[x])


def test_run_imap_and_executor_leave_a_share_to_its_owner():
    handle = corral.share(np.arange(10.0))
    report = corral.run([corral.Task(pick, kwargs={"handle": handle, "x": 3})], workers=2)
    assert report.results == [3.0] and not gone(handle)
    assert list(corral.imap(fail_on, [(handle, 4), (handle, 5)], workers=2)) == [4.0, 5.0]
    assert not gone(handle)
    with corral.Executor(max_workers=2) as executor:
        assert executor.submit(pick, handle, 6).result(timeout=60) == 6.0
    assert not gone(handle)
    handle.release()
    assert gone(handle)


def test_a_share_made_in_the_items_goes_with_them_after_a_task_fails():
    items = [(corral.share(np.arange(100.0)), i) for i in range(4)]  # one share per item
    paths = [h.path for h, _ in items]
    with pytest.raises(corral.BatchError) as info:
        corral.map(fail_on, items, workers=2)
    assert all(os.path.exists(p) for p in paths)  # the caller still holds them
    del items, info  # the error's traceback holds map's frame, and so the items
    gc.collect()
    assert not any(os.path.exists(p) for p in paths)


def test_a_share_survives_a_worker_crash_until_released():
    handle = corral.share(np.arange(100.0))
    got = corral.map(crash_on, [(handle, i) for i in range(4)], workers=2, errors="return")
    assert isinstance(got[2], corral.Failure)
    assert got[:2] == [0.0, 1.0] and got[3] == 3.0
    assert not gone(handle)
    assert corral.map(crash_on, [(handle, 5)], workers=2) == [5.0]
    handle.release()
    assert gone(handle)


def test_release_is_explicit_and_idempotent():
    handle = corral.share(b"x" * 1000)
    handle.release()
    handle.release()
    assert gone(handle)


def test_a_dropped_handle_is_released():
    path = corral.share(np.arange(10.0)).path
    assert not os.path.exists(path)  # the handle was collected at once


def test_only_the_owner_can_release_or_pin():
    with corral.share(np.arange(10.0)) as handle:
        copy = pickle.loads(pickle.dumps(handle))
        copy.release()  # the owner process: the same segment
        assert gone(handle)


def test_file_backing_puts_the_segment_in_dir(tmp_path):
    with corral.share(np.arange(1000.0), backing="file", dir=tmp_path) as handle:
        assert Path(handle.path).parent == tmp_path
        assert corral.map(fail_on, [(handle, 5)], workers=2) == [5.0]
    assert list(tmp_path.iterdir()) == []


# -- fork inheritance: no copy for workers forked after the share ----------------------------


def inherited_read(args: tuple[corral.Shared, int]) -> tuple[float, bool, bool, int]:
    """The item, whether the segment exists, whether the view is writeable, maps so far."""
    handle, x = args
    value = handle.value
    return (
        float(value[x]),
        os.path.exists(handle.path),
        value.flags.writeable,
        _share.attach_count(),
    )


def inherited_writes(handle: corral.Shared) -> dict[str, str]:
    value = handle.value
    attempts = {
        "item": lambda: value.__setitem__(0, 99.0),
        "flag": lambda: setattr(value.flags, "writeable", True),
    }
    return outcomes_of_writes(attempts)


def bytes_read(handle: corral.Shared) -> tuple[bytes, bool, str, bool]:
    value = handle.value
    try:
        value[0] = 1
        wrote = "wrote"
    except TypeError:
        wrote = "TypeError"
    return bytes(value), value.readonly, wrote, os.path.exists(handle.path)


def test_a_fork_pool_started_after_the_share_makes_no_segment():
    arr = np.arange(1000.0)
    maps = _share.attach_count()  # what fork workers start from: they map nothing more
    with corral.share(arr) as handle:
        assert not os.path.exists(handle.path)
        got = corral.map(
            inherited_read, [(handle, i) for i in range(8)], workers=2, start_method="fork",
            chunksize=1,
        )  # fmt: skip
        assert not os.path.exists(handle.path)
    assert got == [(float(i), False, False, maps) for i in range(8)]
    assert not os.path.exists(handle.path)


def test_inherited_views_are_read_only_in_workers_and_in_the_owner():
    arr = np.arange(10.0)
    with corral.share(arr) as handle:
        (attempts,) = corral.map(inherited_writes, [handle], workers=2, start_method="fork")
        assert attempts == {"item": "ValueError", "flag": "ValueError"}
        assert corral.map(inherited_writes, [handle], backend="serial") == [attempts]
        value = handle.value
        assert np.shares_memory(value, arr) and not os.path.exists(handle.path)
        del value
    np.testing.assert_array_equal(arr, np.arange(10.0))
    assert arr.flags.writeable  # the original is the caller's, untouched


def test_shared_bytes_are_inherited_as_a_read_only_memoryview():
    data = bytes(range(256)) * 4
    with corral.share(data) as handle:
        got = corral.map(bytes_read, [handle] * 2, workers=2, start_method="fork")
    assert got == [(data, True, "TypeError", False)] * 2


def test_a_replaced_fork_worker_inherits_it_too():
    with corral.share(np.arange(100.0)) as handle:
        got = corral.map(
            crash_on, [(handle, i) for i in range(6)], workers=2, start_method="fork",
            chunksize=1, errors="return",
        )  # fmt: skip
        assert not os.path.exists(handle.path)
    assert isinstance(got[2], corral.Failure)
    assert got[:2] + got[3:] == [0.0, 1.0, 3.0, 4.0, 5.0]


def test_a_fork_pool_started_before_the_share_gets_a_segment():
    with (
        corral.Pool(workers=2, start_method="fork") as pool,
        corral.share(np.arange(100.0)) as handle,
    ):
        got = pool.map(value_and_segment, [(handle, i) for i in range(4)], chunksize=1)
    assert got == [(float(i), True) for i in range(4)]


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_forkserver_and_spawn_pools_get_a_segment(start_method):
    with corral.share(np.arange(100.0)) as handle:
        got = corral.map(
            value_and_segment, [(handle, i) for i in range(4)], workers=2,
            start_method=start_method, chunksize=1,
        )  # fmt: skip
    assert got == [(float(i), True) for i in range(4)]


def test_one_handle_serves_a_fork_pool_and_a_forkserver_pool():
    handle = corral.share(np.arange(100.0))
    items = [(handle, i) for i in range(4)]
    with corral.Pool(workers=2, start_method="fork") as forked:
        assert forked.map(value_and_segment, items) == [(float(i), False) for i in range(4)]
        with corral.Pool(workers=2, start_method="forkserver") as served:
            assert served.map(value_and_segment, items) == [(float(i), True) for i in range(4)]
            assert forked.map(value_and_segment, items) == [(float(i), True) for i in range(4)]
        assert not gone(handle)  # its owner still holds it
        assert forked.map(fail_on, [(handle, 3)]) == [3.0]
    assert not gone(handle)  # pools do not release a share
    handle.release()
    assert gone(handle)


_INIT: dict[str, float] = {}


def read_in_initializer(handle: corral.Shared) -> None:
    _INIT["value"] = float(handle.value[5])


def initialized(_: int) -> tuple[float, int]:
    return _INIT["value"], os.getpid()


def test_a_pool_that_is_starting_gets_a_segment_for_its_initializer():
    handle = corral.share(np.arange(100.0))
    with corral.Pool(workers=2, start_method="fork") as forked:
        assert forked.map(fail_on, [(handle, 1)]) == [1.0]
        with corral.Pool(
            workers=2,
            start_method="forkserver",
            initializer=read_in_initializer,
            initargs=(handle,),
        ) as served:
            got = served.map(initialized, [0, 1])
    assert [value for value, _ in got] == [5.0, 5.0]
    assert os.getpid() not in {pid for _, pid in got}


def test_an_inherited_share_outlives_its_pool_and_is_released_by_its_owner():
    arr = np.arange(100.0)
    handle = corral.share(arr)
    record = _share._owned[handle.name]
    with corral.Pool(workers=2, start_method="fork") as pool:
        assert pool.map(fail_on, [(handle, 1)] * 2) == [1.0, 1.0]
        assert pool.map(fail_on, [(handle, 3)] * 2) == [3.0, 3.0]
        assert not record.released and record.source is arr
    assert not record.released and record.source is arr
    # a second fork pool, forked after the share: its workers inherit it, still no segment
    assert corral.map(fail_on, [(handle, 4)], workers=2, start_method="fork") == [4.0]
    assert gone(handle)
    handle.release()
    assert record.released and record.source is None  # the original is no longer held
    with pytest.raises(corral.BatchError) as info:
        corral.map(fail_on, [(handle, 0)] * 2, workers=2, start_method="fork")
    assert "was released" in str(info.value.report.failures[0].error)
    with pytest.raises(corral.CorralError, match="was released"):
        handle.value  # noqa: B018


def test_a_process_that_did_not_inherit_it_gets_a_clear_error_not_missing_data():
    with corral.share(np.arange(100.0)) as handle:
        with corral.Pool(workers=2, start_method="fork"):
            blob = pickle.dumps(handle)  # only a fork pool open: no segment made
        assert not os.path.exists(handle.path)
        read = "import pickle, sys; pickle.loads(sys.stdin.buffer.read()).value"
        proc = subprocess.run(
            [sys.executable, "-c", read], input=blob, capture_output=True, timeout=EXIT_WAIT
        )
    assert proc.returncode != 0
    assert b"CorralError" in proc.stderr
    assert b"fork inheritance" in proc.stderr


def test_containers_fortran_arrays_and_rich_frames_are_copied_at_once():
    # A frame of plain numpy columns is inherited (tests/test_share_fork_frames.py).
    frame = pd.DataFrame({"x": pd.Categorical(["a", "b"])})
    fortran = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    for obj in (frame, {"a": np.arange(3.0)}, fortran, bytearray(b"abc")):
        with corral.share(obj) as handle:
            assert os.path.exists(handle.path), obj
    with corral.share(fortran) as handle:
        (got,) = corral.map(read_value, [handle], workers=2, start_method="fork")
    assert got.flags.c_contiguous
    np.testing.assert_array_equal(got, fortran)


# -- errors before any copy ------------------------------------------------------------------


def test_a_share_that_does_not_fit_fails_before_any_copy(tmp_path, monkeypatch):
    real = os.statvfs

    class Full:
        def __init__(self, path: str) -> None:
            st = real(path)
            self.f_frsize = st.f_frsize
            self.f_bavail = 10  # ten blocks free

    monkeypatch.setattr(_shm.os, "statvfs", Full)
    with pytest.raises(corral.ConfigError, match="not enough space"):
        corral.share(np.zeros(100_000), backing="file", dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_full_filesystem_at_reservation_is_a_config_error(tmp_path, monkeypatch):
    def no_space(fd: int, offset: int, size: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_shm.os, "posix_fallocate", no_space, raising=False)
    # Contiguous data is written with pwrite, without a reservation: the disk fills there.
    monkeypatch.setattr(_shm.os, "pwrite", no_space, raising=False)
    with pytest.raises(corral.ConfigError, match="not enough space"):
        corral.share({"a": np.zeros(1000)}, backing="file", dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
    # An array waits for a destination that cannot inherit it: its segment is made then.
    with corral.share(np.zeros(1000), backing="file", dir=tmp_path) as handle:
        with pytest.raises(corral.ConfigError, match="not enough space"):
            pickle.dumps(handle)
        assert list(tmp_path.iterdir()) == []


def test_string_columns_without_pyarrow_are_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow -> ImportError
    frame = pd.DataFrame({"name": pd.Series(["a", "b"], dtype=object), "x": [1.0, 2.0]})
    with pytest.raises(corral.ConfigError, match="need pyarrow"):
        corral.share(frame)


def test_a_date_range_index_keeps_its_frequency():
    series = pd.Series(np.arange(5.0), index=pd.date_range("2024-01-01", periods=5, tz="UTC"))
    with corral.share(series) as handle:
        (got,) = corral.map(read_value, [handle], workers=2)
    pd.testing.assert_series_equal(got, series)


@pytest.mark.parametrize(
    "obj",
    [
        np.array([object(), 1], dtype=object),
        {1, 2},
        pd.DataFrame({"mixed": pd.Series([1, "a"], dtype=object)}),
        pd.DataFrame({"period": pd.period_range("2024", periods=3, freq="D")}),
    ],
    ids=["object-array", "set", "mixed-object-column", "period-column"],
)
def test_what_cannot_be_shared_is_a_config_error(obj):
    with pytest.raises(corral.ConfigError, match=r"corral\.share cannot share"):
        corral.share(obj)


def test_bad_backing_is_a_config_error(tmp_path):
    with pytest.raises(corral.ConfigError, match="backing"):
        corral.share(b"x", backing="disk")
    with pytest.raises(corral.ConfigError, match="not a folder"):
        corral.share(b"x", backing="file", dir=tmp_path / "missing")


# -- the sweep, Ctrl-C and SIGKILL -----------------------------------------------------------


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_sweep_removes_segments_of_dead_owners_only(tmp_path):
    dead = tmp_path / f"corral-{dead_pid()}-0-abc"
    reused = tmp_path / f"corral-{os.getpid()}-1-abc"  # our pid, another start time
    mine = tmp_path / _shm.new_name()
    other = tmp_path / "corral-notes.txt"
    for path in (dead, reused, mine, other):
        path.write_bytes(b"x")
    removed = _shm.sweep((str(tmp_path),))
    assert sorted(removed) == sorted([str(dead), str(reused)])
    assert mine.exists() and other.exists()


def start_script(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[str], str]:
    proc = run_script(SCRIPT, tmp_path, mode)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise AssertionError(f"the script printed nothing: {proc.stderr.read()}")  # type: ignore[union-attr]
    path = json.loads(line)["path"]
    wait_until(lambda: len(marked(tmp_path, "running")) >= 2, "2 running tasks", proc=proc)
    return proc, path


def stop(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["map", "with"])
def test_ctrl_c_leaves_no_segment(tmp_path, mode):
    proc, path = start_script(tmp_path, mode)
    try:
        assert os.path.exists(path)
        os.kill(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=EXIT_WAIT)
        assert "KeyboardInterrupt" in stderr
        assert not os.path.exists(path)
    finally:
        stop(proc)


@pytest.mark.slow
def test_a_sigkilled_coordinators_segment_is_swept_by_the_next_start(tmp_path):
    proc, path = start_script(tmp_path, "map")
    workers = {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=EXIT_WAIT)
        wait_until(lambda: not any(alive(pid) for pid in workers), "its workers to go")
        # Nothing ran in the SIGKILLed process to remove it; but any corral start on this
        # machine sweeps it (another test file running beside this one, under xdist), so it
        # may already be gone here: what is asserted is that a start leaves none behind.
        with corral.Pool(workers=2):  # the next corral start
            assert not os.path.exists(path)
    finally:
        stop(proc)
