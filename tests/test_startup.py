"""Start-up stays lean (issue 15): what a first ``corral.map`` imports, counted, not timed
(the times are in benchmarks/RESULTS.md, against the peers of the same run).

- A fresh coordinator imports none of the heavy modules a first ``map`` of a function pickled
  by name does not need (psutil, cloudpickle, pathlib, difflib, OpenSSL's hashlib, ...,
  ``concurrent.futures.process``); nor do its workers, which build no ``Outcome`` and import
  neither ``dataclasses`` nor ``inspect`` (under forkserver, the fork server's preload is what
  every worker starts with).
- The first access to a name that makes a pool (``corral.Pool``, ``map``, ...) starts the fork
  server before the coordinator's modules are imported, when a core is idle to run it
  (``_forkserver``); a worker it forks gets the environment of its pool, not the server's.
- Messages of built-in values are pickled with plain pickle, byte for byte what cloudpickle
  makes of them; anything else still goes through cloudpickle.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tokenize
from array import array
from pathlib import Path

import cloudpickle
import pytest
from _tasks import environment_variable

import corral
from corral import _codec
from corral._errors import ConfigError
from corral._fixtures import FixtureSet
from corral._messages import Call, Result

SCRIPTS = Path(__file__).resolve().parent / "scripts"

HEAVY = ["cloudpickle", "psutil", "pathlib", "difflib", "_hashlib", "platform", "uuid"]
# concurrent.futures.process (and its multiprocessing.queues): for an Executor's errors only;
# datetime: only a deadline given as one needs it
COORDINATOR_SKIPS = [*HEAVY, "concurrent.futures.process", "multiprocessing.queues", "datetime"]
# a worker names statuses (``_status``), it builds no Outcome; its records are no dataclasses
WORKER_SKIPS = [*HEAVY, "corral._outcome", "dataclasses", "inspect", "ast", "dis"]


@pytest.mark.parametrize("method", ["forkserver", "fork"])
def test_a_first_map_loads_no_heavy_module(method):
    names = sorted(set(COORDINATOR_SKIPS) | set(WORKER_SKIPS))
    out = subprocess.run(
        [sys.executable, str(SCRIPTS / "startup_modules.py"), json.dumps(names), method],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(corral.__file__).parent.parent)},
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert [m for m in seen["coordinator"] if m in COORDINATOR_SKIPS] == []
    if method == "forkserver":  # a forked worker has whatever its coordinator had
        assert [m for m in seen["worker"] if m in WORKER_SKIPS] == []


def _early_server(gate: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, str(SCRIPTS / "startup_early_server.py"), gate],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(corral.__file__).parent.parent)},
    )
    assert out.returncode == 0, out.stderr
    seen: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return seen


def test_the_first_pool_name_starts_the_fork_server_before_the_coordinator_is_imported():
    seen = _early_server("idle")
    assert seen["engine_imported_before"] is False and seen["engine_imported_after"] is True
    assert seen["server_after"] is not None  # launched then: it preloads while we import
    assert seen["server_used"] == seen["server_after"] and seen["result"] == 1


def test_no_early_fork_server_without_an_idle_core():
    seen = _early_server("busy")
    assert seen["server_after"] is None  # started by the first worker, as before
    assert seen["server_used"] is not None and seen["result"] == 1


def test_a_forkserver_worker_gets_the_environment_of_its_pool_not_of_the_server(monkeypatch):
    with corral.Pool(1, start_method="forkserver") as pool:  # the fork server is up
        assert pool.map(environment_variable, ["CORRAL_TEST_LATE"]) == [None]
    monkeypatch.setenv("CORRAL_TEST_LATE", "set after the fork server started")
    with corral.Pool(1, start_method="forkserver") as pool:
        got = pool.map(environment_variable, ["CORRAL_TEST_LATE"])
    assert got == ["set after the fork server started"]


def test_checking_a_builtin_without_fixtures_does_not_parse_its_signature():
    """``inspect.signature`` of a builtin compiles tokenize's regular expression (~10 ms)."""
    tokenize._compile.cache_clear()
    FixtureSet().check(abs)
    assert tokenize._compile.cache_info().currsize == 0
    with pytest.raises(ConfigError, match="keyword-only parameter 'on'"):
        FixtureSet().check(_needs_on)  # a Python function is still looked at


def _needs_on(x: int, *, on: str) -> int:
    return x


def _cloudpickled(obj: object) -> bytes:
    return cloudpickle.dumps(obj, protocol=_codec.PROTOCOL)


def _plain(obj: object) -> bytes:
    with io.BytesIO() as file:
        _codec._PlainPickler(file, protocol=_codec.PROTOCOL).dump(obj)
        return file.getvalue()


def test_messages_of_builtin_values_pickle_as_cloudpickle_would():
    call = Call(7, {3: b"fn"}, 3, [1, "a", (2.5, None), {"k": [b"x"]}], False, [], None)
    assert _plain(call) == _cloudpickled(call)
    result = Result(7, [2, "b"], None, 1.0, 2.0, array("d", [1.5]), 0.1, 0, 0)
    assert _plain(result) == _cloudpickled(result)
    assert _plain(abs) == _cloudpickled(abs)
    assert _plain(_codec.human_size) == _cloudpickled(_codec.human_size)


class Point:
    def __init__(self, x: int) -> None:
        self.x = x


def _local_function() -> object:
    def inner(x: int) -> int:
        return x

    return inner


@pytest.mark.parametrize(
    "value",
    [Point(1), lambda x: x, _local_function(), [].append, Point, {1: Point(2)}],
    ids=["instance", "lambda", "local function", "bound builtin", "class", "nested"],
)
def test_anything_else_is_left_to_cloudpickle(value):
    with pytest.raises(_codec._NeedsCloudpickle):
        _plain(value)
    back = _codec.loads(_codec.dumps(value))  # and it still travels
    assert type(back) is type(value) or callable(back)


def test_a_function_of_main_is_never_pickled_by_name(monkeypatch):
    fn = _local_function()
    fn.__module__ = "__main__"  # type: ignore[attr-defined]
    fn.__qualname__ = "inner"
    monkeypatch.setitem(sys.modules["__main__"].__dict__, "inner", fn)
    with pytest.raises(_codec._NeedsCloudpickle):
        _plain(fn)


def test_the_by_name_rule_before_cloudpickle_is_loaded_is_cloudpickles(monkeypatch):
    rule = cloudpickle.cloudpickle._should_pickle_by_reference
    main_fn = _local_function()
    main_fn.__module__ = "__main__"  # type: ignore[attr-defined]
    fns = [_codec.human_size, _local_function, _local_function(), main_fn, Point.__init__]
    expected = [rule(fn) for fn in fns]
    monkeypatch.setattr(_codec, "_cloudpickle", None)
    monkeypatch.delitem(sys.modules, "cloudpickle")
    assert [_codec._by_name(fn) for fn in fns] == expected == [True, True, False, False, True]
