"""The public surface: ``corral.__all__`` is complete and sorted, and every public object says
it lives in ``corral`` (stable reprs, and pickles that survive moving internal code)."""

from __future__ import annotations
import __future__

import enum
import inspect
import pickle
import types

import pytest

import corral

EXPECTED = {
    "Attempt",
    "BatchError",
    "CommandFailed",
    "ConfigError",
    "CorralError",
    "EffectError",
    "Executor",
    "Failure",
    "FixtureError",
    "JournalError",
    "JournalLocked",
    "JournalView",
    "Outcome",
    "Pool",
    "RemoteError",
    "Report",
    "SerializationError",
    "Service",
    "ServiceError",
    "Settings",
    "Shared",
    "Status",
    "Task",
    "TaskCancelled",
    "TaskError",
    "TaskSkipped",
    "TaskTimeout",
    "WorkerCrashed",
    "WorkerStartError",
    "cpu_count",
    "fixture",
    "free_port",
    "imap",
    "map",
    "open_journal",
    "record",
    "run",
    "share",
}  # one name a line: branches that add names merge cleanly


def public_names():
    """Names a user could reach as ``corral.X``: not private, not a submodule, not a
    ``from __future__`` feature."""
    names = set()
    for name in dir(corral):  # loads the lazily imported names too
        if name.startswith("_"):
            continue
        value = getattr(corral, name)
        if isinstance(value, types.ModuleType | __future__._Feature):
            continue
        names.add(name)
    return names


def test_all_is_sorted():
    assert corral.__all__ == sorted(corral.__all__)


def test_all_has_no_duplicates():
    assert len(corral.__all__) == len(set(corral.__all__))


def test_all_lists_every_public_name():
    assert set(corral.__all__) == public_names()


def test_all_names_the_documented_api():
    assert set(corral.__all__) == EXPECTED


def test_every_name_in_all_exists():
    for name in corral.__all__:
        assert hasattr(corral, name), name


def test_star_import_gives_exactly_all():
    namespace = {}
    exec("from corral import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == set(corral.__all__)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_public_object_module_is_corral(name):
    assert getattr(corral, name).__module__ == "corral"


@pytest.mark.parametrize("name", sorted(n for n in EXPECTED if inspect.isclass(getattr(corral, n))))
def test_public_class_repr_names_corral(name):
    cls = getattr(corral, name)
    if issubclass(cls, enum.Enum):
        assert repr(cls) == f"<enum '{name}'>"  # enums' repr does not show the module
    else:
        assert repr(cls) == f"<class 'corral.{name}'>"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_public_object_pickles_by_reference_to_corral(name):
    obj = getattr(corral, name)
    data = pickle.dumps(obj)
    assert b"corral._" not in data
    assert pickle.loads(data) is obj


@pytest.mark.parametrize(
    "name", sorted(n for n in EXPECTED if inspect.isfunction(getattr(corral, n)))
)
def test_public_function_qualname_is_its_public_name(name):
    assert getattr(corral, name).__qualname__ == name


def test_version_is_a_string():
    assert isinstance(corral.__version__, str)
    assert corral.__version__.count(".") >= 1


def test_error_hierarchy():
    assert issubclass(corral.ConfigError, corral.CorralError)
    assert issubclass(corral.ConfigError, ValueError)
    assert issubclass(corral.SerializationError, corral.CorralError)
    assert issubclass(corral.SerializationError, TypeError)
    for name in ("TaskTimeout", "WorkerCrashed", "WorkerStartError", "TaskCancelled"):
        assert issubclass(getattr(corral, name), corral.TaskError)
    for name in ("FixtureError",):
        assert issubclass(getattr(corral, name), corral.TaskError)
    assert issubclass(corral.TaskTimeout, TimeoutError)
    assert issubclass(corral.TaskError, corral.CorralError)
    assert issubclass(corral.RemoteError, corral.CorralError)
    assert issubclass(corral.BatchError, corral.CorralError)
    assert issubclass(corral.ServiceError, corral.CorralError)


def test_status_is_a_str_enum():
    assert issubclass(corral.Status, str)
    assert corral.Status.OK == "ok"


def test_cpu_count_is_a_positive_int():
    count = corral.cpu_count()
    assert isinstance(count, int) and count >= 1


def test_instances_of_public_errors_pickle_round_trip():
    error = corral.TaskTimeout("k", 1.5, pid=123)
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is corral.TaskTimeout
    assert str(again) == str(error)
    assert again.key == "k" and again.timeout == 1.5 and again.pid == 123


def test_worker_crashed_pickles_round_trip():
    error = corral.WorkerCrashed("k", pid=7, exitcode=-9)
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is corral.WorkerCrashed
    assert (again.pid, again.exitcode, again.signal) == (7, -9, "SIGKILL")
    assert str(again) == str(error)


def test_remote_error_pickles_round_trip():
    error = corral.RemoteError("pkg.Weird", "message", "traceback text")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is corral.RemoteError
    assert (again.type_name, again.message, again.remote_traceback) == (
        "pkg.Weird", "message", "traceback text",
    )  # fmt: skip


def test_fixture_error_pickles_round_trip():
    error = corral.FixtureError(
        "set-up failed", fixture="omc", key=3, cause=ValueError("x"), attempt="1-a-1"
    )
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is corral.FixtureError
    assert (again.fixture, again.key, again.attempt) == ("omc", 3, "1-a-1")
    assert type(again.cause) is ValueError and str(again) == "set-up failed"


def test_service_error_pickles_round_trip():
    error = corral.ServiceError("no", argv=("a",), attempts=("1",), output=("line",))
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is corral.ServiceError
    assert (again.argv, again.attempts, again.output) == (("a",), ("1",), ("line",))
    assert str(again) == "no"
