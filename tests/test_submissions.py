"""Tasks submitted one at a time share batches (``corral._submissions``): each keeps its own
future, key and error; a never-ending stream rolls over to new batches; the engine's
invariants hold (the suite runs with CORRAL_VALIDATE=1)."""

from __future__ import annotations

import threading

from _tasks import WAIT

import corral
from corral import _submissions
from corral._events import TaskFinished, TaskQueued


def square(x):
    return x * x


def fail_on_3(x):
    if x == 3:
        raise ValueError("three")
    return x


def test_a_flood_of_submits_shares_a_few_batches_and_keeps_each_result():
    queued = []
    with corral.Pool(workers=2) as pool:
        pool._events.subscribe(lambda e: queued.append(e) if type(e) is TaskQueued else None)
        fs = [pool.submit(square, i) for i in range(500)]
        assert [f.result(timeout=WAIT) for f in fs] == [i * i for i in range(500)]
    assert len(queued) == 500
    assert len({e.batch for e in queued}) < 500  # gathered: not one batch per task
    assert [e.key for e in queued] == list(range(500))  # key: the number of submits before


def test_each_future_gets_its_own_error_and_the_others_their_values():
    with corral.Pool(workers=2) as pool:
        fs = [pool.submit(fail_on_3, i) for i in range(8)]
        errors = [f.exception(timeout=WAIT) for f in fs]
    assert [type(e).__name__ if e else None for e in errors] == [
        None, None, None, "ValueError", None, None, None, None,
    ]  # fmt: skip
    assert [f.result() for i, f in enumerate(fs) if i != 3] == [0, 1, 2, 4, 5, 6, 7]


def test_a_long_stream_rolls_over_to_new_batches(monkeypatch):
    monkeypatch.setattr(_submissions, "BATCH_MAX", 16)
    finished = []
    with corral.Pool(workers=2) as pool:
        pool._events.subscribe(lambda e: finished.append(e) if type(e) is TaskFinished else None)
        fs = [pool.submit(square, i) for i in range(100)]
        assert [f.result(timeout=WAIT) for f in fs] == [i * i for i in range(100)]
    per_batch = {}
    for event in finished:
        per_batch[event.batch] = per_batch.get(event.batch, 0) + 1
    assert len(per_batch) >= 100 // 16
    assert max(per_batch.values()) <= 16


def test_submits_from_many_threads_all_complete():
    with corral.Pool(workers=2) as pool:
        results: dict[int, list] = {}

        def worker(t):
            results[t] = [pool.submit(square, t * 100 + i) for i in range(50)]

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for t, fs in results.items():
            assert [f.result(timeout=WAIT) for f in fs] == [(t * 100 + i) ** 2 for i in range(50)]


def test_a_cancelled_future_in_a_chunk_does_not_run_and_the_others_do():
    with corral.Pool(workers=1) as pool:
        fs = [pool.submit(square, i) for i in range(50)]
        cancelled = [f for f in fs[25:] if f.cancel()]
        for f in fs:
            if f not in cancelled:
                assert f.result(timeout=WAIT) == fs.index(f) ** 2
    assert all(f.cancelled() for f in cancelled)
