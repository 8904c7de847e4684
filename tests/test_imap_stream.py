"""``imap`` streams (issue 15, S6): a Call's values reach the caller in one queue entry, the
window of items in flight grows from 512 to what four full chunks per worker need once
tasks are timed (bounded in items and in pickled bytes), and an unordered stream refills its
window like an ordered one (it used to stall once its first 512 items were yielded)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import corral
from corral import _streaming as s


def _numbers(n: int):
    yield from range(n)


@pytest.mark.parametrize("ordered", [True, False])
def test_a_generator_longer_than_the_window_streams_to_the_end(ordered):
    n = 5000  # ten first windows
    with corral.Pool(workers=2) as pool:
        out = list(pool.imap(abs, _numbers(n), ordered=ordered))
    assert (out if ordered else sorted(out)) == list(range(n))


def test_failures_keep_their_place_among_chunked_values():
    def odd_fails(x: int) -> int:
        if x % 7 == 3:
            raise ValueError(x)
        return x

    with corral.Pool(workers=2) as pool:
        out = list(pool.imap(odd_fails, _numbers(2000), errors="return"))
    assert [i for i, v in enumerate(out) if isinstance(v, corral.Failure)] == [
        i for i in range(2000) if i % 7 == 3
    ]
    assert all(v == i for i, v in enumerate(out) if not isinstance(v, corral.Failure))


def _batch(mean: float | None, nbytes: int, items: int) -> SimpleNamespace:
    return SimpleNamespace(mean_duration=lambda: mean, argument_bytes=nbytes, argument_items=items)


def test_the_window_grows_with_measured_tasks_within_its_bounds():
    first = 512
    assert s._imap_window(_batch(None, 0, 0), 2, first) == first  # nothing measured
    assert s._imap_window(_batch(1e-6, 5_000, 1000), 2, first) == s.IMAP_WINDOW_MAX
    big = s._imap_window(_batch(1e-6, 10**9, 1000), 2, first)  # 1 MB arguments
    assert big == max(first, s.IMAP_WINDOW_BYTES // 10**6)
    slow = s._imap_window(_batch(0.01, 5_000, 1000), 2, first)  # 10 ms tasks
    assert slow == first  # 4 chunks of 0.1 s per worker = 80 items: the first window stays
