"""Fork inheritance of pandas objects: a DataFrame or Series whose columns are plain numpy data,
shared before a fork Pool starts, is read by its workers in place (copy-on-write) as
read-only views, and no segment is ever made; frames with other column kinds take the segment,
as documented in docs/sharing.md.

Every test runs under conftest's leak guards (no process, no segment left behind).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from _tasks import outcomes_of_writes

import corral
from corral._sharing import share as _share

N = 200


def plain_frame() -> pd.DataFrame:
    """Mixed plain numpy columns (one block per dtype in pandas), a frequency index."""
    return pd.DataFrame(
        {
            "float": np.linspace(0.0, 1.0, N),
            "int": np.arange(N, dtype=np.int32),
            "bool": np.arange(N) % 3 == 0,
            "when": pd.date_range("2024-01-01", periods=N, freq="h"),
            "delta": pd.to_timedelta(np.arange(N), unit="s"),
            "complex": np.arange(N) * (1 + 1j),
        },
        index=pd.date_range("2000-01-01", periods=N, freq="D", name="day"),
    )


def one_block_frame() -> pd.DataFrame:
    """One float64 block, as read from a 2-D array (column-major in pandas)."""
    return pd.DataFrame(np.arange(N * 4.0).reshape(N, 4), columns=["a", "b", "c", "d"])


def labelled_series() -> pd.Series:
    return pd.Series(np.arange(N, dtype=np.float32), index=[f"r{i}" for i in range(N)], name="x")


# -- what tasks do (module level: fork workers have them) ------------------------------------


def read_in_worker(handle: corral.Shared) -> tuple[object, bool, int, int]:
    """The value, whether a segment exists, maps so far, and the worker's pid."""
    value = handle.value
    return value, os.path.exists(handle.path), _share.attach_count(), os.getpid()


def write_attempts(handle: corral.Shared) -> dict[str, str]:
    value = handle.value
    column = value.iloc[:, 0].to_numpy()
    attempts = {
        "iloc": lambda: value.iloc.__setitem__((0, 0), 99),
        "array": lambda: column.__setitem__(0, 99),
        "flag": lambda: setattr(column.flags, "writeable", True),
    }
    return outcomes_of_writes(attempts)


def first_column_sum(handle: corral.Shared) -> float:
    return float(handle.value.iloc[:, 0].sum())


# -- no segment, equal values, read-only ---------------------------------------------------


@pytest.mark.parametrize("make", [plain_frame, one_block_frame, labelled_series])
def test_a_fork_pool_reads_a_plain_frame_in_place_and_makes_no_segment(make):
    original = make()
    maps = _share.attach_count()  # what fork workers start from: they map nothing more
    with corral.share(original) as handle:
        assert not os.path.exists(handle.path)
        got = corral.map(read_in_worker, [handle] * 6, workers=2, start_method="fork", chunksize=1)
        assert not os.path.exists(handle.path)
    assert {pid for *_, pid in got} - {os.getpid()}  # read in workers
    for value, segment, attaches, _ in got:
        assert not segment and attaches == maps
        if isinstance(original, pd.Series):
            pd.testing.assert_series_equal(value, original)
        else:
            pd.testing.assert_frame_equal(value, original)
            assert getattr(value.index, "freq", None) == getattr(original.index, "freq", None)


READ_ONLY = {"iloc": "ValueError", "array": "ValueError", "flag": "ValueError"}


@pytest.mark.parametrize("make", [plain_frame, one_block_frame])
def test_inherited_frames_are_read_only_in_workers_and_in_the_owner(make):
    original = make()
    with corral.share(original) as handle:
        in_workers = corral.map(write_attempts, [handle] * 2, workers=2, start_method="fork")
        in_owner = corral.map(write_attempts, [handle], backend="serial")
        assert not os.path.exists(handle.path)
    assert in_workers + in_owner == [READ_ONLY] * 3
    pd.testing.assert_frame_equal(original, make())  # the caller's original is untouched


def test_the_owner_reads_the_original_memory_zero_copy():
    original = plain_frame()
    block = one_block_frame()
    with corral.share(original) as handle, corral.share(block) as block_handle:
        value = handle.value
        for name in original.columns:
            assert np.shares_memory(value[name].to_numpy(), original[name].to_numpy()), name
        # A one-block frame stays one block: its values are one view of the original's.
        assert np.shares_memory(block_handle.value.to_numpy(), block.to_numpy())
        del value


def test_a_forkserver_pool_afterwards_gets_a_segment_with_the_same_frame():
    original = plain_frame()
    with corral.share(original) as handle:
        forked = corral.map(first_column_sum, [handle] * 2, workers=2, start_method="fork")
        assert not os.path.exists(handle.path)
        (value, segment, _, pid) = corral.map(
            read_in_worker, [handle] * 2, workers=2, start_method="forkserver"
        )[0]
        assert segment and pid != os.getpid()
    pd.testing.assert_frame_equal(value, original)
    assert forked == [pytest.approx(float(original["float"].sum()))] * 2


# -- the rule: other column kinds take the segment ------------------------------------------


@pytest.mark.parametrize(
    "column",
    [
        pd.Categorical(["a", "b"] * (N // 2)),
        pd.date_range("2024-01-01", periods=N, freq="h", tz="Europe/Paris"),
        pd.array(range(N), dtype="Int64"),
        pd.Series([f"s{i}" for i in range(N)], dtype=object),
    ],
    ids=["categorical", "tz-aware", "nullable", "object"],
)
def test_a_frame_with_another_column_kind_is_copied_into_a_segment_at_once(column):
    frame = plain_frame().reset_index(drop=True).assign(other=column)
    with corral.share(frame) as handle:
        assert os.path.exists(handle.path)
        (value, segment, _, pid) = corral.map(
            read_in_worker, [handle] * 2, workers=2, start_method="fork"
        )[0]
        assert segment and pid != os.getpid()
    pd.testing.assert_frame_equal(value, frame, check_dtype=False)
