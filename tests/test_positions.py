"""Position states (``_positions``): the transitions, the one finish path, and ``validate``.

Pure: no processes, no clock. The engine-side checks run in every other test (the test
suite sets ``CORRAL_VALIDATE=1``, see ``conftest.py``); these show that a violation is seen.
"""

from __future__ import annotations

import pytest

from corral._needs import make_needs, plan
from corral._options import RunOptions
from corral._outcome import Attempt, Status
from corral._positions import (
    BACKOFF,
    CACHED,
    CANCELLED,
    FAILED,
    NEW,
    OK,
    RUNNING,
    WAITING,
    InvalidState,
    Positions,
)
from corral._scheduler import Scheduler


def attempt() -> Attempt:
    return Attempt(0, 123, 1.0, 2.0, Status.FAILED, "ValueError: boom")


def strict(n: int, scheduler: Scheduler | None = None) -> Positions:
    positions = Positions(n, scheduler)
    positions.strict = True
    return positions


def test_a_plain_batch_hands_out_chunks_in_order_and_requeued_ones_first() -> None:
    positions = strict(6)
    first = positions.take(2)
    second = positions.take(2)
    assert (list(first), list(second)) == ([0, 1], [2, 3])
    positions.validate([first, second])
    positions.requeue(first)
    assert positions.state[0] == WAITING
    positions.validate([second])
    assert list(positions.take(5)) == [0, 1]  # the requeued chunk, whole
    assert list(positions.take(5)) == [4, 5]
    positions.finish(range(0, 2), OK)
    positions.finish([2, 3, 4, 5], OK)
    positions.validate([])
    assert positions.n_final == 6


def test_back_off_then_retry_keeps_the_attempt_record() -> None:
    positions = strict(1)
    (pos,) = positions.take(1)
    positions.back_off(pos, attempt())
    assert positions.state[pos] == BACKOFF
    positions.validate([])
    positions.retry(pos)
    assert positions.state[pos] == WAITING
    assert list(positions.take(1)) == [0]
    assert positions.attempts(0) == 2
    assert positions.history(0) == (attempt(),)


def test_stop_returns_every_waiting_position_once() -> None:
    positions = strict(6)
    running = positions.take(2)
    backing = positions.take(1)
    positions.back_off(backing[0], attempt())
    requeued = positions.take(1)
    positions.requeue(requeued)
    left = positions.stop()
    assert sorted(left) == [2, 3, 4, 5]
    assert not positions.has_ready()
    for pos in left:
        positions.finish([pos], CANCELLED)
    positions.retry(2)  # its back-off ends after the stop: nothing happens
    positions.validate([running])
    assert positions.state[2] == CANCELLED


def test_validate_sees_a_running_position_that_no_call_holds() -> None:
    positions = strict(4)
    chunk = positions.take(2)
    positions.validate([chunk])
    with pytest.raises(InvalidState, match="2 running, 1 in flight"):
        positions.validate([chunk[:1]])


def test_validate_sees_a_final_count_that_disagrees_with_the_states() -> None:
    positions = strict(2)
    positions.finish(positions.take(2), OK)
    positions.n_final += 1
    with pytest.raises(InvalidState, match="counted final"):
        positions.validate([])


def test_strict_transitions_refuse_a_second_finish_and_a_wrong_requeue() -> None:
    positions = strict(3)
    chunk = positions.take(1)
    positions.finish(chunk, FAILED)
    with pytest.raises(InvalidState, match="finished twice"):
        positions.finish([0], OK)
    with pytest.raises(InvalidState, match="requeued position 0 is failed"):
        positions.requeue([0])
    with pytest.raises(InvalidState, match="expected running"):
        positions.back_off(1, attempt())


def test_given_positions_are_never_handed_out() -> None:
    positions = strict(6)
    for pos in (1, 2, 4):
        positions.give(pos)
        positions.finish([pos], CACHED, succeeded=True)
    handed = [p for _ in range(6) for p in positions.take(2)]
    assert handed == [0, 3, 5]
    assert positions.state.count(CACHED) == 3
    assert positions.state.count(NEW) == 0
    assert positions.state.count(RUNNING) == 3
    positions.validate([[0, 3], [5]])


def _chain_scheduler() -> Scheduler:
    # 0 and 1 are independent; 2 after 0; 3 after 1; 4 after 2 and 3
    afters: list[list[int]] = [[], [], [0], [1], [2, 3]]
    needs = [make_needs(after=a) for a in afters]
    the_plan = plan(range(5), needs, RunOptions())
    assert the_plan is not None
    return Scheduler(the_plan)


def test_scheduled_dependants_see_a_cached_success_and_skip_after_a_cached_failure() -> None:
    positions = strict(5, _chain_scheduler())
    assert positions.finish([0], CACHED, succeeded=True) == []
    assert positions.finish([1], CACHED, succeeded=False) == [(3, 1), (4, 3)]
    for pos, _ in [(3, 1), (4, 3)]:
        positions.finish([pos], FAILED)
    picked = positions.pick(5)
    assert picked == [2]  # 0 and 1 are cached, never picked; 2 runs after its cached dep
    positions.validate([picked])
    positions.finish(picked, OK)
    positions.validate([])
    assert positions.n_final == 5
