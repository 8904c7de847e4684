"""Clean-ups found on review, where they show: errors that name the fix or the task, options
checked once, one positive-number check and one byte-size formatter, and a share that lives as
long as its owner holds it.

Every test runs under conftest's leak guards (no process, no segment left behind).
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

import corral
from corral import _codec, _options

# -- task bodies (module level: workers import them) --------------------------------------------


def square(x: int) -> int:
    return x * x


def first(handle: corral.Shared) -> float:
    return float(handle.value[0])


class Unloadable:
    """A result that pickles in the worker but cannot be rebuilt in the coordinator."""

    def __init__(self, coordinator: int) -> None:
        self.coordinator = coordinator

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_unloadable, (self.coordinator,))


def _rebuild_unloadable(coordinator: int) -> Unloadable:
    if os.getpid() == coordinator:
        raise ValueError("this result cannot be rebuilt here")
    return Unloadable(coordinator)


def make_unloadable(coordinator: int) -> Unloadable:
    return Unloadable(coordinator)


class RaisesOnPickle(Exception):
    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("no pickling")


# -- a function that is not callable --------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: corral.map(3, [1, 2]),
        lambda: corral.imap("f", [1, 2]),
        lambda: corral.Task(None),
        lambda: corral.Pool(2, initializer=5),
    ],
    ids=["map", "imap", "Task", "initializer"],
)
def test_a_non_callable_function_is_a_config_error_and_a_type_error(call):
    with pytest.raises(corral.ConfigError) as info:
        call()
    assert isinstance(info.value, TypeError)
    assert "must be callable" in str(info.value)


def test_a_non_callable_function_given_to_a_pool_is_a_type_error_too():
    with corral.Pool(1, backend="serial") as pool, pytest.raises(TypeError, match="callable"):
        pool.map(42, [1])


# -- unknown options ----------------------------------------------------------------------------


def test_an_unknown_option_suggests_the_closest_known_one():
    with pytest.raises(corral.ConfigError) as info:
        corral.map(square, [1], timout=3)
    message = str(info.value)
    assert "'timout'" in message and "did you mean `timeout`?" in message
    assert "max_worker_memory" not in message  # not the list of every option


def test_an_unknown_option_of_a_pool_suggests_too():
    with pytest.raises(corral.ConfigError, match="did you mean `retries`"):
        corral.Pool(2, retires=2)


def test_an_option_like_no_other_points_to_the_help():
    with pytest.raises(corral.ConfigError, match=r"unknown option 'zzz'; see help\(corral.map\)"):
        corral.map(square, [1], zzz=1)


# -- options checked once -------------------------------------------------------------------------


def test_map_checks_its_options_once(monkeypatch):
    made = []
    original = _options.PoolOptions.__post_init__

    def counting(self):
        made.append(self)
        original(self)

    monkeypatch.setattr(_options.PoolOptions, "__post_init__", counting)
    assert corral.map(square, [1, 2, 3], backend="serial") == [1, 4, 9]
    assert len(made) == 1


# -- one positive-number check, one size formatter ---------------------------------------------


@pytest.mark.parametrize(
    ("value", "zero", "inf", "ok"),
    [
        (1, False, False, True),
        (0.5, False, False, True),
        (0, False, False, False),
        (0, True, False, True),
        (-1, True, False, False),
        (True, False, False, False),
        (float("nan"), True, True, False),
        (float("inf"), False, False, False),
        (float("inf"), False, True, True),
        ("3", False, False, False),
    ],
)
def test_is_positive(value, zero, inf, ok):
    assert _options.is_positive(value, allow_zero=zero, allow_inf=inf) is ok


@pytest.mark.parametrize(
    "make",
    [
        lambda: corral.Task(square, (1,), uses={"gpu": float("nan")}),
        lambda: corral.Task(square, (1,), cost=-1),
        lambda: corral.Pool(2, resources={"gpu": float("inf")}),
        lambda: corral.Pool(2, fixture_teardown_timeout=float("inf")),
        lambda: corral.Pool(2, timeout=float("nan")),
    ],
)
def test_every_positive_number_option_refuses_the_same_values(make):
    with pytest.raises(corral.ConfigError):
        make()


def test_sizes_read_the_same_everywhere():
    assert _codec.human_size(512) == "512 bytes"
    assert _codec.human_size(3 << 30) == "3.0 GiB"
    assert _codec.human_size(5 << 40) == "5.0 TiB"
    with corral.share(np.zeros(1 << 17)) as handle:  # 1 MiB of float64, and a header
        assert repr(handle).endswith("1.0 MiB>")


def test_a_task_bigger_than_the_memory_budget_names_sizes_like_the_rest():
    with pytest.raises(corral.ConfigError, match=r"needs 2\.0 GiB of memory .* 1\.0 GiB"):
        corral.run([corral.Task(square, (1,), memory="2GiB")], memory_budget="1GiB")


# -- errors that travel ---------------------------------------------------------------------------


def test_an_exception_that_does_not_pickle_travels_as_a_remote_error():
    from corral._errors import ExceptionWithTraceback

    try:
        raise RaisesOnPickle("boom")
    except RaisesOnPickle as exc:
        wrapped = _codec.portable(ExceptionWithTraceback(exc))
    assert isinstance(wrapped.exc, corral.RemoteError)
    assert "RaisesOnPickle" in str(wrapped.exc) and "boom" in str(wrapped.exc)
    plain = ExceptionWithTraceback(ValueError("fine"))
    assert _codec.portable(plain) is plain
    pickle.loads(pickle.dumps(wrapped))  # what falls back does travel


def test_a_result_that_cannot_be_decoded_names_its_task():
    task = corral.Task(make_unloadable, (os.getpid(),), key="the-task")
    report = corral.run([task], workers=1, backend="process", errors="return")
    (failure,) = report.failures
    assert isinstance(failure.error, corral.SerializationError)
    assert "'the-task'" in str(failure.error) and "cannot be rebuilt here" in str(failure.error)


# -- a share lives as long as its owner holds it ------------------------------------------------


def test_one_share_serves_two_maps_without_a_with_block():
    handle = corral.share(np.arange(10.0))
    assert corral.map(first, [handle, handle], workers=2) == [0.0, 0.0]
    assert corral.map(first, [handle], workers=2) == [0.0]  # released by the first, before
    assert corral.map(first, [handle], backend="serial") == [0.0]
    handle.release()
    with pytest.raises(corral.BatchError, match="was released"):
        corral.map(first, [handle], workers=2)
