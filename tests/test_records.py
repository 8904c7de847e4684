"""corral's internal records (``_record.Record``) behave as the dataclasses they replaced
(issue 15, start-up: no ``dataclasses``, hence no ``inspect``, in a worker): fields by
position and keyword, defaults, ``repr`` and ``==`` by fields, unhashable, no stray attributes;
``Deadline`` compared and ordered by ``(when, seq)`` only, as ``order=True`` with
``compare=False`` fields did."""

from __future__ import annotations

import heapq
import pickle
from array import array

import pytest

from corral._deadlines import Deadline
from corral._messages import Call, Result
from corral._slots import InFlight, Slot
from corral._worker.execute import Progress


def test_fields_by_position_and_keyword_with_defaults():
    call = Call(7, {}, 3, [1, 2], False, [])
    assert call.timeouts is None
    assert call == Call(call_id=7, fns={}, fn_id=3, items=[1, 2], star=False, drop=[])
    assert call != Call(7, {}, 3, [1, 2], True, [])
    result = Result(1, [2], None, 1.0, 2.0, None, 0.5, 10, 0)
    assert (result.effects, result.child_cpu, result.peak_rss, result.output) == (
        None,
        0.0,
        0,
        None,
    )


def test_repr_names_every_field_in_order():
    assert repr(Call(7, {}, 3, [1], False, [])) == (
        "Call(call_id=7, fns={}, fn_id=3, items=[1], star=False, drop=[], timeouts=None)"
    )
    assert repr(Progress(1, 2.0, 3.0, [], {}, None)).startswith("Progress(call_id=1, started=2.0")


def test_unhashable_and_closed_to_new_attributes():
    call = Call(7, {}, 3, [1], False, [])
    with pytest.raises(TypeError):
        hash(call)
    with pytest.raises(AttributeError):
        call.other = 1  # type: ignore[attr-defined]
    assert Call(7, {}, 3, [1], False, []).__eq__(object()) is NotImplemented


def test_messages_survive_pickling():
    call = Call(7, {3: b"fn"}, 3, [1, "a"], True, [2], [1.5])
    assert pickle.loads(pickle.dumps(call)) == call
    result = Result(
        7, [2], None, 1.0, 2.0, array("d", [1.5]), 0.1, 5, 6, {0: (1,)}, 0.2, 7, {0: ("o", "e")}
    )
    assert pickle.loads(pickle.dumps(result)) == result


def test_a_slot_gets_its_own_queue():
    a, b = Slot(), Slot()
    a.calls.append(InFlight(1, None, [0], 0.0))  # type: ignore[arg-type]
    assert len(a.calls) == 1 and len(b.calls) == 0
    assert b == Slot(None, b.calls, False, 0, None, None)


def test_deadlines_compare_and_order_by_time_then_sequence():
    def act() -> None:
        pass

    early, late, tie = Deadline(1.0, 5, act), Deadline(2.0, 0, act), Deadline(1.0, 6, act)
    assert early < tie < late and late > early and early <= Deadline(1.0, 5, print)
    assert early == Deadline(1.0, 5, print, cancelled=True)  # action, cancelled: not compared
    heap: list[Deadline] = []
    for d in (late, tie, early):
        heapq.heappush(heap, d)
    assert [heapq.heappop(heap) for _ in range(3)] == [early, tie, late]
