"""Functions that the standard pickle refuses still run on workers, under every start method:
lambdas, closures, functions and classes defined in ``__main__`` of a script, partial
functions and bound methods."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

import corral

START_METHODS = ["fork", "forkserver", "spawn"]
SCRIPT = Path(__file__).parent / "scripts" / "pickling_main.py"
SCRIPT_OUTPUT = """\
lambda [100, 101, 102, 103]
closure [0, 3, 6, 9]
main-function [Point(1, 1), Point(6, 8)]
class-result [Point(2, 1), Point(4, 3)] True
task-lambda [13, 14]
in-workers True
"""

OFFSET = 1000


def power(base, exponent):
    return base**exponent


def getpid(_=None):
    return os.getpid()


class Scaler:
    def __init__(self, factor):
        self.factor = factor

    def scale(self, x):
        return x * self.factor

    @classmethod
    def twice(cls, x):
        return 2 * x

    @staticmethod
    def negate(x):
        return -x

    def __call__(self, x):
        return x + self.factor


@pytest.fixture(params=START_METHODS)
def start_method(request):
    return request.param


def on_workers(fn, items, start_method):
    """``corral.map`` on two worker processes, checking that they really are other processes."""
    options = {"workers": 2, "start_method": start_method, "chunksize": 1}
    assert os.getpid() not in corral.map(getpid, range(2), **options)
    return corral.map(fn, items, **options)


# -- a script's __main__ -----------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("method", START_METHODS)
def test_script_main_lambda_closure_and_class_run_on_workers(method, tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), method],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == SCRIPT_OUTPUT


# -- in this process, under each start method --------------------------------------------------
def test_lambda(start_method):
    assert on_workers(lambda x: x * 2, range(4), start_method) == [0, 2, 4, 6]


def test_lambda_using_a_module_global(start_method):
    assert on_workers(lambda x: x + OFFSET, [1, 2], start_method) == [1001, 1002]


def test_closure(start_method):
    factor = 5

    def times_factor(x):
        return x * factor

    assert on_workers(times_factor, range(3), start_method) == [0, 5, 10]


def test_nested_closure_over_a_closure(start_method):
    def outer(a):
        def middle(b):
            return lambda x: x + a + b

        return middle

    assert on_workers(outer(10)(100), [1, 2], start_method) == [111, 112]


def test_partial_function(start_method):
    assert on_workers(functools.partial(power, exponent=3), [1, 2, 3], start_method) == [1, 8, 27]


def test_partial_of_a_lambda(start_method):
    fn = functools.partial(lambda a, b: a - b, 100)
    assert on_workers(fn, [1, 2], start_method) == [99, 98]


def test_bound_method(start_method):
    assert on_workers(Scaler(4).scale, [1, 2], start_method) == [4, 8]


def test_classmethod_and_staticmethod(start_method):
    assert on_workers(Scaler.twice, [1, 2], start_method) == [2, 4]
    assert on_workers(Scaler.negate, [1, 2], start_method) == [-1, -2]


def test_callable_instance(start_method):
    assert on_workers(Scaler(10), [1, 2], start_method) == [11, 12]


def test_class_defined_in_a_test_as_argument_and_result(start_method):
    class Box:
        def __init__(self, value):
            self.value = value

    results = on_workers(lambda box: Box(box.value * 2), [Box(1), Box(2)], start_method)
    assert [type(r).__name__ for r in results] == ["Box", "Box"]
    assert [r.value for r in results] == [2, 4]


def test_builtin_function(start_method):
    assert on_workers(abs, [-1, -2], start_method) == [1, 2]


def test_lambda_in_run_and_submit(start_method):
    with corral.Pool(workers=2, start_method=start_method) as pool:
        report = pool.run([corral.Task(lambda a, b: a * b, (x,), {"b": 3}) for x in range(3)])
        assert report.results == [0, 3, 6]
        assert pool.submit(lambda: "submitted").result(timeout=30) == "submitted"


def test_lambda_with_executor(start_method):
    import multiprocessing

    context = multiprocessing.get_context(start_method)
    with corral.Executor(max_workers=2, mp_context=context) as ex:
        assert ex.submit(lambda x: x + 1, 1).result(timeout=30) == 2
        assert list(ex.map(lambda x: -x, range(3))) == [0, -1, -2]
