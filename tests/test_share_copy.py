"""How ``corral.share`` copies data into its segment (issue 15): contiguous buffers go in with
``pwrite``, one sequential pass; anything else through a reserved, populated mapping. Both
give the same bytes back."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

import corral
from corral._sharing import layout as _layout


@pytest.fixture
def pwrites(monkeypatch):
    calls: list[int] = []
    real = os.pwrite

    def counting(fd: int, data: memoryview, offset: int) -> int:
        calls.append(len(data))
        return real(fd, data, offset)

    monkeypatch.setattr(_layout.os, "pwrite", counting)
    return calls


def _through_segment(obj: object, tmp_path) -> object:
    with corral.share(obj, backing="file", dir=tmp_path) as handle:
        copy = pickle.loads(pickle.dumps(handle))  # made now: no fork pool to inherit it
        return copy.value.copy() if isinstance(obj, np.ndarray) else dict(copy.value)


def test_a_contiguous_array_is_written_with_pwrite(tmp_path, pwrites, monkeypatch):
    monkeypatch.setattr(_layout, "PWRITE_STEP", 1 << 16)  # several steps for one piece
    arr = np.arange(100_000, dtype=np.float64).reshape(1000, 100)
    got = _through_segment(arr, tmp_path)
    np.testing.assert_array_equal(got, arr)
    assert sum(pwrites) >= arr.nbytes and len(pwrites) > arr.nbytes // (1 << 16)


def test_a_strided_array_is_copied_through_a_mapping(tmp_path, pwrites):
    arr = np.arange(200_000, dtype=np.int64)[::2]
    got = _through_segment(arr, tmp_path)
    np.testing.assert_array_equal(got, arr)
    assert pwrites == []


def test_several_pieces_keep_their_offsets(tmp_path, pwrites):
    obj = {"a": np.arange(7, dtype=np.int8), "b": b"xyz" * 1000, "c": np.ones((3, 5))}
    got = _through_segment(obj, tmp_path)
    np.testing.assert_array_equal(got["a"], obj["a"])
    assert bytes(got["b"]) == obj["b"]
    np.testing.assert_array_equal(got["c"], obj["c"])
    assert len(pwrites) == 4  # the header, then the three pieces
