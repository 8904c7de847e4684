"""Small things a new user trips on: lock names given as paths, group labels of any hashable
type, ``Task`` arguments that are not a tuple, an ``after=`` tuple meant as one key,
``Report.by_group()`` keys, and a worker fixture whose teardown hangs."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from pathlib import Path

import pytest

import corral
from corral import ConfigError, Status, Task

pytestmark = pytest.mark.timeout(180)


# -- task bodies (module level: workers import them) --------------------------------------------
def hold(claims: str, name: str, seconds: float) -> str:
    """Hold an O_EXCL claim file for ``name`` for ``seconds``; fail if another task holds it."""
    path = Path(claims, f"lock-{name.replace(os.sep, '_')}")
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    os.close(fd)
    try:
        time.sleep(seconds)  # the time the claim is held, not a synchronisation
        return "done"
    finally:
        path.unlink()


def echo(*args: object, **kwargs: object) -> object:
    return args, kwargs


def fail_if(fail: bool) -> str:
    if fail:
        raise ValueError("asked to fail")
    return "ok"


def overlapping(report: corral.Report, a: object, b: object) -> bool:
    oa = next(o for o in report.outcomes if o.key == a)
    ob = next(o for o in report.outcomes if o.key == b)
    return oa.started < ob.finished and ob.started < oa.finished  # type: ignore[operator]


# -- locks: paths ---------------------------------------------------------------------------------
def test_a_path_is_a_lock_name(tmp_path):
    data = tmp_path / "tas_1980.nc"
    assert Task(echo, locks=data).locks == (str(data),)
    assert Task(echo, locks=[data, "gpu", data]).locks == (str(data), "gpu")


def test_lock_names_are_compared_as_given():
    assert Task(echo, locks="data/a.nc").locks != Task(echo, locks="./data/a.nc").locks
    assert Task(echo, locks=Path("./data/a.nc")).locks == ("data/a.nc",)  # pathlib's spelling


@pytest.mark.parametrize("bad", [b"data/a.nc", [b"x"], [Path("a"), 3], [""], 7])
def test_a_lock_name_that_is_not_a_string_or_path_is_a_config_error(bad):
    with pytest.raises(ConfigError, match=r"lock names|locks must be"):
        Task(echo, locks=bad)


def test_tasks_locking_the_same_path_never_overlap(tmp_path):
    data = tmp_path / "shared.nc"
    claims = str(tmp_path)
    tasks = [
        Task(hold, (claims, str(data), 0.2), key=f"t{i}", locks=data if i % 2 else str(data))
        for i in range(4)
    ]
    report = corral.run(tasks, workers=4)
    assert report.ok, report.summary()
    for i in range(4):
        for j in range(i + 1, 4):
            assert not overlapping(report, f"t{i}", f"t{j}")


def test_map_takes_paths_from_a_lock_callable(tmp_path):
    files = [tmp_path / "a.nc", tmp_path / "b.nc", tmp_path / "a.nc"]
    results = corral.map(
        lambda f: hold(str(tmp_path), str(f), 0.1), files, workers=3, locks=lambda f: f
    )
    assert results == ["done"] * 3


# -- groups: any hashable label -------------------------------------------------------------------
def test_a_group_is_any_hashable_label_shown_with_str():
    tasks = [
        Task(fail_if, (False,), group=("tas", 1980)),
        Task(fail_if, (True,), group=("tas", 1980)),
        Task(fail_if, (False,), group=7),
        Task(fail_if, (False,)),
    ]
    report = corral.run(tasks, workers=2, errors="return")
    by_group = report.by_group()
    assert list(by_group) == [("tas", 1980), 7, None]
    assert by_group[("tas", 1980)]["ok"] == 1 and by_group[("tas", 1980)]["failed"] == 1
    summary = report.summary()
    assert "('tas', 1980)" in summary and "(none)" in summary


def test_map_takes_hashable_groups_from_a_callable():
    results = corral.map(fail_if, [False, False], workers=2, group=lambda x: (x, "label"))
    assert results == ["ok", "ok"]


@pytest.mark.parametrize("bad", [["tas"], {"a": 1}])
def test_an_unhashable_group_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="group must be a hashable label"):
        Task(echo, group=bad)
    with pytest.raises(ConfigError, match="group must be a hashable label"):
        corral.map(echo, [1], group=bad)


def test_a_group_label_is_not_read_as_markup():
    report = corral.run([Task(fail_if, (False,), group="[bold]x[/bold]"),
                         Task(fail_if, (False,), group="y")], workers=2)  # fmt: skip
    assert "[bold]x[/bold]" in report.summary()


# -- by_group keys -------------------------------------------------------------------------------
def test_by_group_keys_are_status_strings():
    report = corral.run([Task(fail_if, (False,), group="g")], workers=1, backend="serial")
    counts = report.by_group()["g"]
    assert all(type(k) is str for k in counts)
    assert counts == {"ok": 1, "failed": 0, "timeout": 0, "crashed": 0, "cancelled": 0,
                      "skipped": 0, "cached": 0}  # fmt: skip
    assert counts[Status.OK] == 1  # Status members still find them
    assert "Status" not in repr(report.by_group())


# -- Task args and kwargs -------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "hint"), [(5, "`(5,)`"), ("abc", "`('abc',)`"),
                                            (range(3), "`(range(0, 3),)`")])  # fmt: skip
def test_task_args_that_are_not_a_tuple_or_list_are_a_config_error(args, hint):
    with pytest.raises(ConfigError, match="args must be a tuple or list") as info:
        Task(echo, args)
    assert f"did you mean {hint}?" in str(info.value)


def test_task_args_may_be_a_list_or_none():
    assert Task(echo, [1, 2]).args == (1, 2)
    assert Task(echo, None).args == ()
    report = corral.run([Task(echo, ["abc"]), Task(echo, ("abc",))], workers=2)
    assert report.results == [(("abc",), {}), (("abc",), {})]


@pytest.mark.parametrize("kwargs", [[("a", 1)], "a=1", {1: "a"}])
def test_task_kwargs_that_are_not_a_mapping_of_names_are_a_config_error(kwargs):
    with pytest.raises(ConfigError, match="Task kwargs"):
        Task(echo, (), kwargs)


# -- after= a tuple meant as one key -------------------------------------------------------------
def test_after_a_tuple_that_is_a_key_suggests_a_list():
    tasks = [
        Task(fail_if, (False,), key=("tas", 1980)),
        Task(fail_if, (False,), key="normal", after=("tas", 1980)),
    ]
    with pytest.raises(ConfigError) as info:
        corral.run(tasks, workers=2)
    message = str(info.value)
    assert "depends on 'tas', which is not a task of this run" in message
    assert "after=[('tas', 1980)]" in message


def test_after_a_list_with_the_tuple_key_works():
    tasks = [
        Task(fail_if, (False,), key=("tas", 1980)),
        Task(fail_if, (False,), key="normal", after=[("tas", 1980)]),
    ]
    assert corral.run(tasks, workers=2).results == ["ok", "ok"]


def test_an_unknown_key_without_a_matching_tuple_gets_no_suggestion():
    tasks = [Task(fail_if, (False,), key="a"), Task(fail_if, (False,), after="nope")]
    with pytest.raises(ConfigError) as info:
        corral.run(tasks, workers=2)
    assert "after=[" not in str(info.value)


# -- a worker fixture whose teardown hangs -------------------------------------------------------
GRACE = 3.0
"""fixture_teardown_timeout in these tests: room for a loaded worker to receive STOP and start
its teardown (which it announces) before the grace passes."""


@corral.fixture
def stuck():
    yield "value"
    threading.Event().wait()  # a teardown that never returns


def use_stuck(x: int, *, stuck: str) -> str:
    return f"{x}-{stuck}"


@pytest.mark.parametrize("start_method", ["forkserver", "fork"])
def test_a_hung_teardown_is_killed_after_the_grace_and_logged_by_name(caplog, start_method):
    caplog.set_level(logging.WARNING, logger="corral")
    results = corral.map(
        use_stuck,
        range(4),
        workers=2,
        fixtures=[stuck],
        fixture_teardown_timeout=GRACE,
        start_method=start_method,
    )
    assert results == [f"{x}-value" for x in range(4)]
    kills = [r for r in caplog.records if r.name == "corral" and "tearing down" in r.message]
    assert kills, caplog.text
    for record in kills:
        assert record.levelno == logging.WARNING
        assert "fixture 'stuck'" in record.message
        assert f"within {GRACE:g} s (fixture_teardown_timeout); the worker was killed" in (
            record.message
        )


def test_a_recycled_worker_with_a_hung_teardown_is_killed_and_replaced(caplog):
    caplog.set_level(logging.WARNING, logger="corral")
    with corral.Pool(2, fixtures=[stuck], fixture_teardown_timeout=GRACE,
                     max_tasks_per_worker=1) as pool:  # fmt: skip
        assert pool.map(use_stuck, range(4), chunksize=1) == [f"{x}-value" for x in range(4)]
    kills = [r for r in caplog.records if "fixture 'stuck'" in r.message]
    assert len(kills) == 4, caplog.text  # one per task: each worker ran one, then retired


warned = threading.Event()


class _SetOnWarning(logging.Handler):
    """Keeps the WARNINGs of logger ``corral``; sets ``warned`` once it has kept the overrun
    warning (kept first: the test reads them as soon as the teardown returns)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if "has not finished" in record.getMessage():
            warned.set()


@corral.fixture
def slow_in_this_process():
    yield "value"
    if not warned.wait(60):  # returns once the overrun warning was logged
        raise AssertionError("no warning about the slow teardown")


def use_slow(x: int, *, slow_in_this_process: str) -> str:
    return slow_in_this_process


def test_serial_mode_warns_about_a_slow_teardown_naming_it():
    warned.clear()
    handler = _SetOnWarning()
    logger = logging.getLogger("corral")
    logger.addHandler(handler)
    try:
        results = corral.map(use_slow, [1, 2], backend="serial", fixtures=[slow_in_this_process],
                             fixture_teardown_timeout=0.2)  # fmt: skip
    finally:
        logger.removeHandler(handler)
    assert results == ["value", "value"]
    (record,) = [r for r in handler.records if "has not finished" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "fixture 'slow_in_this_process'" in record.getMessage()
    assert "fixture_teardown_timeout" in record.getMessage()


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, "10", None, True])
def test_fixture_teardown_timeout_is_validated(bad):
    with pytest.raises(ConfigError, match="fixture_teardown_timeout"):
        corral.map(echo, [1], fixture_teardown_timeout=bad)
    with pytest.raises(ConfigError, match="fixture_teardown_timeout"):
        corral.Pool(1, fixture_teardown_timeout=bad)


def test_fixture_teardown_timeout_defaults_to_ten_seconds():
    from corral._options import PoolOptions

    assert PoolOptions().fixture_teardown_timeout == 10.0


def test_fixture_teardown_timeout_is_taken_everywhere():
    assert corral.run([Task(echo, (1,))], workers=1, fixture_teardown_timeout=2).ok
    assert list(corral.imap(echo, [1], workers=1, fixture_teardown_timeout=2)) == [((1,), {})]
    with corral.Executor(1, fixture_teardown_timeout=2) as executor:
        assert executor.submit(echo, 1).result() == ((1,), {})
    with contextlib.closing(corral.Pool(1, fixture_teardown_timeout=2.5)) as pool:
        assert pool.options.fixture_teardown_timeout == 2.5
