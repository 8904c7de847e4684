"""Hypothesis fuzzes the Python boundary: every option of ``map``/``run``/``Pool`` and every
``Task`` field, given any value, is either accepted or refused with a ``ConfigError`` naming
it, before any work starts; never another exception from deep inside, never a hang.

Options are built directly (``PoolOptions``/``RunOptions``: what every entry point checks
first), so the examples are cheap; one ``corral.map`` per example would start processes.
"""

from __future__ import annotations

import contextlib
import datetime
from dataclasses import fields

from hypothesis import given, settings
from hypothesis import strategies as st

import corral
from corral._options import PoolOptions, RunOptions

FUZZ = settings(max_examples=120, deadline=None)

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["3x", "200%", "0x", "4GiB", "-1", "auto", "fork", "raise", "1e309"]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(-3, 3), max_size=3),
    st.datetimes(),
    st.just(object()),
    st.just(ValueError),
)
NAMES = [f.name for f in fields(PoolOptions)] + [f.name for f in fields(RunOptions)]


@FUZZ
@given(name=st.sampled_from(NAMES), value=values)
def test_any_option_value_is_accepted_or_a_config_error_naming_it(name, value):
    kind = PoolOptions if name in {f.name for f in fields(PoolOptions)} else RunOptions
    try:
        kind(**{name: value})
    except corral.ConfigError as error:
        said = str(error)
        assert any(part[:5] in said for part in name.split("_") if len(part) > 3), said


def noop() -> None:
    pass


@FUZZ
@given(
    field=st.sampled_from(["args", "kwargs", "timeout", "retries", "key", "group"]),
    value=values,
)
def test_any_task_field_is_accepted_or_a_config_error(field, value):
    with contextlib.suppress(corral.ConfigError):  # any other exception fails the test
        corral.Task(noop, **{field: value})


def test_a_deadline_may_be_a_datetime():
    RunOptions(deadline=datetime.datetime.now())
