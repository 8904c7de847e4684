"""The joblib backend (``corral.joblib``): joblib.Parallel and scikit-learn on corral workers.

Real scikit-learn estimators, real worker processes and real crashes (SIGKILL). Scores under
the corral backend must equal the in-process ones (``n_jobs=1``) exactly: the same folds and
the same deterministic estimators run, only elsewhere.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from _deps import require_module
from _tasks import WAIT, wait_for_file

import corral

joblib = require_module("joblib")
corral_joblib = require_module("corral.joblib")

pytestmark = pytest.mark.slow


def data():
    # scikit-learn is imported by the tests that use it, not by this module: workers import
    # this module for its task functions, and need not load scikit-learn for them.
    require_module("sklearn")
    from sklearn.datasets import make_classification

    return make_classification(n_samples=200, n_features=8, random_state=0)


# -- task functions ----------------------------------------------------------------------------
def pid_of(_):
    return os.getpid()


def square(x):
    return x * x


def kill_self_on(x, bad):
    if x == bad:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def crash_once(x, directory):
    """SIGKILL the worker the first time ``x == 2`` runs; succeed when run again."""
    marker = Path(directory, "crashed")
    if x == 2 and not marker.exists():
        marker.write_text("")
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def wait_forever(directory):
    Path(directory, "started").write_text("")
    wait_for_file(os.path.join(directory, "never"), timeout=120)
    return "not stopped"


def inner_parallel(x):
    """A nested Parallel call in a worker: which backend it gets, how many threads it runs."""
    from joblib.parallel import get_active_backend

    backend, n_jobs = get_active_backend()
    inner = joblib.Parallel(n_jobs=4)(joblib.delayed(square)(i) for i in range(x + 3))
    return type(backend).__name__, n_jobs, inner, len(os.sched_getaffinity(0)) > 0


# -- registration and plain Parallel ---------------------------------------------------------
def test_import_registers_the_corral_backend():
    from joblib.parallel import BACKENDS

    assert BACKENDS["corral"] is corral_joblib.CorralBackend


def test_parallel_runs_in_corral_workers_in_order():
    with joblib.parallel_config(backend="corral", n_jobs=2):
        values = joblib.Parallel()(joblib.delayed(square)(i) for i in range(50))
        pids = set(joblib.Parallel()(joblib.delayed(pid_of)(i) for i in range(10)))
    assert values == [i * i for i in range(50)]
    assert os.getpid() not in pids


def test_n_jobs_one_runs_in_this_process_as_joblib_does():
    with joblib.parallel_config(backend="corral", n_jobs=1):
        pids = set(joblib.Parallel()(joblib.delayed(pid_of)(i) for i in range(3)))
    assert pids == {os.getpid()}


def test_unknown_option_is_a_config_error_before_any_work():
    with (
        pytest.raises(corral.ConfigError, match="retrys"),
        joblib.parallel_config(backend="corral", n_jobs=2, retrys=1),
    ):
        pass


# -- scikit-learn ------------------------------------------------------------------------------
def test_cross_val_score_equals_n_jobs_one():
    X, y = data()
    from sklearn.model_selection import cross_val_score
    from sklearn.tree import DecisionTreeClassifier

    model = DecisionTreeClassifier(random_state=0)
    expected = cross_val_score(model, X, y, cv=5, n_jobs=1)
    with joblib.parallel_config(backend="corral"):
        got = cross_val_score(model, X, y, cv=5, n_jobs=2)
    assert list(got) == list(expected)


def test_grid_search_equals_n_jobs_one():
    X, y = data()
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    grid = {"C": [0.01, 0.1, 1.0, 10.0]}
    serial = GridSearchCV(LogisticRegression(max_iter=500), grid, cv=3, n_jobs=1).fit(X, y)
    with joblib.parallel_config(backend="corral"):
        parallel = GridSearchCV(LogisticRegression(max_iter=500), grid, cv=3, n_jobs=2).fit(X, y)
    assert parallel.best_params_ == serial.best_params_
    assert list(parallel.cv_results_["mean_test_score"]) == list(
        serial.cv_results_["mean_test_score"]
    )
    assert parallel.best_score_ == serial.best_score_


# -- crashes, retries, timeouts ----------------------------------------------------------------
def test_worker_killed_fails_the_call_naming_the_task():
    with (
        joblib.parallel_config(backend="corral", n_jobs=2),
        pytest.raises(corral.WorkerCrashed) as info,
    ):
        joblib.Parallel(batch_size=1)(joblib.delayed(kill_self_on)(i, 3) for i in range(8))
    error = info.value
    assert error.signal == "SIGKILL"
    assert "joblib task" in str(error) and "kill_self_on" in str(error)


def test_backend_works_again_after_a_crash():
    with joblib.parallel_config(backend="corral", n_jobs=2):
        with pytest.raises(corral.WorkerCrashed):
            joblib.Parallel(batch_size=1)(joblib.delayed(kill_self_on)(i, 1) for i in range(4))
        assert joblib.Parallel()(joblib.delayed(square)(i) for i in range(5)) == [0, 1, 4, 9, 16]


def test_worker_killed_is_retried_when_configured(tmp_path):
    with joblib.parallel_config(backend="corral", n_jobs=2, retries=1):
        values = joblib.Parallel(batch_size=1)(
            joblib.delayed(crash_once)(i, str(tmp_path)) for i in range(6)
        )
    assert values == list(range(6))
    assert (tmp_path / "crashed").exists()


def test_timeout_stops_the_call(tmp_path):
    started = time.monotonic()
    with (
        joblib.parallel_config(backend="corral", n_jobs=2, timeout=1.0),
        pytest.raises(corral.TaskTimeout, match="joblib task"),
    ):
        joblib.Parallel()(joblib.delayed(wait_forever)(str(tmp_path)) for _ in range(1))
    assert time.monotonic() - started < WAIT


# -- nesting -----------------------------------------------------------------------------------
def test_nested_parallel_runs_sequentially_in_the_worker():
    with joblib.parallel_config(backend="corral", n_jobs=2):
        results = joblib.Parallel()(joblib.delayed(inner_parallel)(x) for x in range(4))
    for x, (backend, _n_jobs, inner, _) in enumerate(results):
        assert backend == "SequentialBackend"
        assert inner == [i * i for i in range(x + 3)]


# -- options -----------------------------------------------------------------------------------
def test_progress_option_draws_a_bar_counting_tasks(capfd):
    with joblib.parallel_config(backend="corral", n_jobs=2, progress=True):
        values = joblib.Parallel(batch_size=1)(joblib.delayed(square)(i) for i in range(6))
    assert values == [i * i for i in range(6)]
    assert "6/" in capfd.readouterr().err
