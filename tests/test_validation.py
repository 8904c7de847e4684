"""Bad input fails at the call, with a clear message, before any work starts.

"Before any work starts" is proved three ways: the task function would have written a file
(none exists), the input generator would have recorded a pull (none happened), and no worker
process was started.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from conftest import leftover_processes

import corral


# -- task functions ----------------------------------------------------------------------------
def square(x):
    return x * x


def write_marker(arg):
    directory, x = arg
    Path(directory, f"ran-{x}").write_text("")
    return x


class LockedWriter:
    """A callable that writes a marker file, holding a lock (so it cannot be pickled)."""

    def __init__(self, directory):
        self.directory = directory
        self.lock = threading.Lock()

    def __call__(self, x):
        with self.lock:
            Path(self.directory, f"ran-{x}").write_text("")
        return x


def make_locked_closure(directory):
    lock = threading.Lock()

    def locked_closure(x):
        with lock:
            Path(directory, f"ran-{x}").write_text("")
        return x

    return locked_closure


def make_locked_lambda(directory):
    lock = threading.Lock()
    return lambda x: (lock, Path(directory, f"ran-{x}").write_text(""))[1]


def items_for(directory, n=4):
    return [(str(directory), x) for x in range(n)]


def recording(items, pulled):
    for item in items:
        pulled.append(item)
        yield item


def assert_nothing_started(directory):
    assert list(Path(directory).iterdir()) == [], "a task ran"
    assert leftover_processes() == [], "a worker process was started"


# -- the function -------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [None, 42, "square"])
def test_map_non_callable_fn(fn):
    with pytest.raises((corral.ConfigError, TypeError), match="callable"):
        corral.map(fn, [1, 2], workers=2)


def test_imap_non_callable_fn_fails_at_the_call():
    with pytest.raises((corral.ConfigError, TypeError), match="callable"):
        corral.imap(42, [1, 2], workers=2)


def test_pool_map_non_callable_fn():
    with corral.Pool(workers=2) as pool:
        with pytest.raises((corral.ConfigError, TypeError), match="callable"):
            pool.map(42, [1, 2])
        assert pool.map(square, [3]) == [9]


def test_pool_submit_non_callable_fn():
    with (
        corral.Pool(workers=2) as pool,
        pytest.raises((corral.ConfigError, TypeError), match="callable"),
    ):
        pool.submit(42)


def test_task_non_callable_fn():
    with pytest.raises((corral.ConfigError, TypeError), match="callable"):
        corral.Task(42)


def test_pool_non_callable_initializer():
    with pytest.raises((corral.ConfigError, TypeError), match="callable"):
        corral.Pool(workers=2, initializer=42)


# -- unpicklable functions ----------------------------------------------------------------------
def test_unpicklable_callable_object_is_serialization_error_naming_it(tmp_path):
    with pytest.raises(corral.SerializationError, match="LockedWriter"):
        corral.map(LockedWriter(tmp_path), range(4), workers=2)
    assert list(tmp_path.iterdir()) == []


def test_unpicklable_closure_is_serialization_error_naming_it(tmp_path):
    with pytest.raises(corral.SerializationError, match="locked_closure"):
        corral.map(make_locked_closure(tmp_path), range(4), workers=2)
    assert list(tmp_path.iterdir()) == []


def test_unpicklable_lambda_is_serialization_error_naming_it(tmp_path):
    with pytest.raises(corral.SerializationError, match="lambda"):
        corral.map(make_locked_lambda(tmp_path), range(4), workers=2)
    assert list(tmp_path.iterdir()) == []


def test_serialization_error_is_a_type_error_and_a_corral_error():
    assert issubclass(corral.SerializationError, TypeError)
    assert issubclass(corral.SerializationError, corral.CorralError)


def test_unpicklable_fn_in_imap_fails_before_any_task_runs(tmp_path):
    with pytest.raises(corral.SerializationError, match="LockedWriter"):
        list(corral.imap(LockedWriter(tmp_path), range(4), workers=2))
    assert list(tmp_path.iterdir()) == []


def test_unpicklable_fn_in_run_fails_before_any_task_runs(tmp_path):
    tasks = [corral.Task(write_marker, ((str(tmp_path), "first"),))]
    tasks += [corral.Task(LockedWriter(tmp_path), (x,)) for x in range(3)]
    with pytest.raises(corral.SerializationError, match="LockedWriter"):
        corral.run(tasks, workers=2)
    assert list(tmp_path.iterdir()) == []


def test_unpicklable_fn_on_a_pool_leaves_the_pool_usable(tmp_path):
    with corral.Pool(workers=2) as pool:
        with pytest.raises(corral.SerializationError):
            pool.map(LockedWriter(tmp_path), range(4))
        assert pool.map(square, range(4)) == [0, 1, 4, 9]
    assert list(tmp_path.iterdir()) == []


def test_unpicklable_fn_on_pool_submit_is_serialization_error(tmp_path):
    with (
        corral.Pool(workers=2) as pool,
        pytest.raises(corral.SerializationError, match="LockedWriter"),
    ):
        pool.submit(LockedWriter(tmp_path), 1)
    assert list(tmp_path.iterdir()) == []


# -- bad options: each fails before the input is read or a worker starts ----------------------
BAD_OPTIONS = [
    pytest.param({"timeout": 0}, "timeout", id="timeout=0"),
    pytest.param({"timeout": -1}, "timeout", id="timeout=-1"),
    pytest.param({"timeout": float("nan")}, "timeout", id="timeout=nan"),
    pytest.param({"timeout": "10"}, "timeout", id="timeout=str"),
    pytest.param({"workers": 0}, "workers", id="workers=0"),
    pytest.param({"workers": -2}, "workers", id="workers=-2"),
    pytest.param({"workers": "many"}, "workers", id="workers=many"),
    pytest.param({"workers": 1.5}, "workers", id="workers=1.5"),
    pytest.param({"retries": -1}, "retries", id="retries=-1"),
    pytest.param({"retries": 1.5}, "retries", id="retries=1.5"),
    pytest.param({"errors": "ignore"}, "errors", id="errors=ignore"),
    pytest.param({"chunksize": 0}, "chunksize", id="chunksize=0"),
    pytest.param({"chunksize": -3}, "chunksize", id="chunksize=-3"),
    pytest.param({"chunksize": "big"}, "chunksize", id="chunksize=big"),
    pytest.param({"start_method": "thread"}, "start_method", id="start_method=thread"),
    pytest.param({"backend": "thread"}, "backend", id="backend=thread"),
    pytest.param({"progress": "yes"}, "progress", id="progress=yes"),
    pytest.param({"retry_on": "ValueError"}, "retry_on", id="retry_on=str"),
    pytest.param({"backoff": -1}, "backoff", id="backoff=-1"),
    pytest.param({"max_tasks_per_worker": 0}, "max_tasks_per_worker", id="max_tasks=0"),
    pytest.param({"max_worker_memory": "lots"}, "max_worker_memory", id="memory=lots"),
    pytest.param({"max_worker_memory": -5}, "max_worker_memory", id="memory=-5"),
    pytest.param({"kill_grace": -1}, "kill_grace", id="kill_grace=-1"),
    pytest.param({"bogus_option": 1}, "bogus_option", id="unknown"),
    pytest.param({"max_workers": 4}, "max_workers", id="unknown=max_workers"),
]


@pytest.mark.parametrize(("options", "named"), BAD_OPTIONS)
def test_map_bad_option_is_config_error_naming_it(options, named, tmp_path):
    options = {"workers": 2, **options}
    with pytest.raises(corral.ConfigError, match=named):
        corral.map(write_marker, items_for(tmp_path), **options)
    assert_nothing_started(tmp_path)


@pytest.mark.parametrize(("options", "named"), BAD_OPTIONS)
def test_map_bad_option_does_not_read_the_input(options, named, tmp_path):
    pulled = []
    options = {"workers": 2, **options}
    with pytest.raises(corral.ConfigError):
        corral.map(write_marker, recording(items_for(tmp_path), pulled), **options)
    assert pulled == []


@pytest.mark.parametrize(("options", "named"), BAD_OPTIONS)
def test_imap_bad_option_fails_at_the_call(options, named, tmp_path):
    pulled = []
    options = {"workers": 2, **options}
    with pytest.raises(corral.ConfigError, match=named):
        corral.imap(write_marker, recording(items_for(tmp_path), pulled), **options)
    assert pulled == []
    assert_nothing_started(tmp_path)


@pytest.mark.parametrize(("options", "named"), BAD_OPTIONS)
def test_run_bad_option_is_config_error_naming_it(options, named, tmp_path):
    options = {"workers": 2, **options}
    tasks = [corral.Task(write_marker, (item,)) for item in items_for(tmp_path)]
    with pytest.raises(corral.ConfigError, match=named):
        corral.run(tasks, **options)
    assert_nothing_started(tmp_path)


@pytest.mark.parametrize(("options", "named"), BAD_OPTIONS)
def test_pool_bad_option_is_config_error_naming_it(options, named, tmp_path):
    options = {"workers": 2, **options}
    with pytest.raises(corral.ConfigError, match=named):
        corral.Pool(**options)
    assert_nothing_started(tmp_path)


def test_config_error_is_a_value_error_and_a_corral_error():
    assert issubclass(corral.ConfigError, ValueError)
    assert issubclass(corral.ConfigError, corral.CorralError)


def test_unknown_option_message_lists_the_known_ones():
    with pytest.raises(corral.ConfigError) as info:
        corral.map(square, [1, 2], workers=2, timout=5)
    message = str(info.value)
    assert "timout" in message
    assert "timeout" in message.replace("timout", "")


@pytest.mark.parametrize(
    ("options", "named"),
    [
        pytest.param({"timeout": 0}, "timeout", id="timeout=0"),
        pytest.param({"errors": "ignore"}, "errors", id="errors=ignore"),
        pytest.param({"bogus_option": 1}, "bogus_option", id="unknown"),
        pytest.param({"workers": 3}, "workers", id="pool-option"),
        pytest.param({"start_method": "spawn"}, "start_method", id="pool-option-2"),
    ],
)
def test_pool_map_bad_per_call_option_is_config_error(options, named, tmp_path):
    with corral.Pool(workers=2) as pool:
        with pytest.raises(corral.ConfigError, match=named):
            pool.map(write_marker, items_for(tmp_path), **options)
        assert pool.map(square, [2]) == [4]
    assert list(tmp_path.iterdir()) == []


# -- CORRAL_WORKERS ---------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["abc", "0", "-1"])
def test_bad_corral_workers_env_is_config_error(value, monkeypatch, tmp_path):
    monkeypatch.setenv("CORRAL_WORKERS", value)
    with pytest.raises(corral.ConfigError, match="CORRAL_WORKERS"):
        corral.map(write_marker, items_for(tmp_path))
    assert_nothing_started(tmp_path)


# -- Task -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        pytest.param({"timeout": 0}, "timeout", id="timeout=0"),
        pytest.param({"timeout": -2}, "timeout", id="timeout=-2"),
        pytest.param({"timeout": "5"}, "timeout", id="timeout=str"),
        pytest.param({"retries": -1}, "retries", id="retries=-1"),
        pytest.param({"retries": 1.5}, "retries", id="retries=1.5"),
    ],
)
def test_task_bad_value_is_config_error(kwargs, named):
    with pytest.raises(corral.ConfigError, match=named):
        corral.Task(square, (1,), **kwargs)


def test_run_non_task_item_is_config_error(tmp_path):
    tasks = [corral.Task(write_marker, ((str(tmp_path), 0),)), square]
    with pytest.raises(corral.ConfigError, match="Task"):
        corral.run(tasks, workers=2)
    assert_nothing_started(tmp_path)


def test_run_duplicate_keys_fails_before_any_task_runs(tmp_path):
    tasks = [
        corral.Task(write_marker, ((str(tmp_path), 0),), key="same"),
        corral.Task(write_marker, ((str(tmp_path), 1),), key="same"),
    ]
    with pytest.raises(corral.ConfigError, match="same"):
        corral.run(tasks, workers=2)
    assert_nothing_started(tmp_path)


def test_run_unhashable_key_is_config_error(tmp_path):
    tasks = [corral.Task(write_marker, ((str(tmp_path), 0),), key=["a"])]
    with pytest.raises(corral.ConfigError, match="hashable"):
        corral.run(tasks, workers=2)
    assert list(tmp_path.iterdir()) == []


# -- the serial path validates the same way ----------------------------------------------------
@pytest.mark.parametrize(("options", "named"), BAD_OPTIONS[:4] + BAD_OPTIONS[8:14])
def test_serial_bad_option_is_config_error(options, named, tmp_path):
    options = {"backend": "serial", **options}
    with pytest.raises(corral.ConfigError, match=named):
        corral.map(write_marker, items_for(tmp_path), **options)
    assert list(tmp_path.iterdir()) == []
