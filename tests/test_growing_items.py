"""A growing batch's items (``_items.GrowingItems``, imap and submitted tasks): what a dict by
position would give, part by part, and a part let go once all its items are forgotten."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from corral._items import GrowingItems


def test_a_range_within_a_part_is_one_slice_and_across_parts_item_by_item():
    items = GrowingItems()
    items.extend(list(range(10)))
    items.extend(list(range(10, 15)))
    assert items.take(range(2, 5)) == [2, 3, 4]
    assert items.take(range(8, 12)) == [8, 9, 10, 11]
    assert items.take([14, 0]) == [14, 0]
    assert len(items) == 15


def test_forgotten_parts_are_let_go_and_their_items_are_gone():
    items = GrowingItems(list(range(4)))
    items.extend([None, None])  # None is an item like any other
    items.forget(range(0, 4))
    assert items._parts[0] is None
    assert items[4] is None
    assert list(items) == [4, 5]
    items.forget([4, 4, 99, -1])  # twice, unknown: ignored
    assert list(items) == [5]


ops = st.lists(
    st.one_of(
        st.tuples(st.just("extend"), st.integers(0, 5)),
        st.tuples(st.just("forget"), st.integers(0, 40), st.integers(1, 6)),
        st.tuples(st.just("forget_one"), st.integers(0, 40)),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_behaves_as_a_dict_by_position(steps):
    items, model = GrowingItems(), {}
    for step in steps:
        if step[0] == "extend":
            new = [f"item{len(items) + k}" for k in range(step[1])]
            model.update(zip(range(len(items), len(items) + len(new)), new, strict=True))
            items.extend(new)
        elif step[0] == "forget":
            positions = range(step[1], step[1] + step[2])
            items.forget(positions)
            for p in positions:
                model.pop(p, None)
        else:
            items.forget([step[1]])
            model.pop(step[1], None)
        assert sorted(items) == sorted(model)
        for pos, value in model.items():
            assert items[pos] == value
        kept = sorted(model)
        if kept:
            assert items.take(kept) == [model[p] for p in kept]
