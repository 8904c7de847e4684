"""Options, validated once at the boundary, before any work starts.

``PoolOptions`` shape the workers (how many, how started, when recycled); ``RunOptions`` shape
one batch (timeouts, retries, error policy, chunking, progress). ``corral.map`` and
``corral.run`` take both; ``Pool(...)`` takes both and ``Pool.map``/``run`` override the run
options per call. Options are frozen: a new option set means a new object.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Literal

from ._backends import lookup as lookup_backend
from ._errors import ConfigError
from ._fixtures import FixtureSet, as_fixture_set
from ._platform import cpu_count
from ._survival import RelativeTimeout, is_datetime, parse_relative_timeout

if TYPE_CHECKING:
    import datetime

ErrorPolicy = Literal["raise", "return"]
START_METHODS = ("fork", "forkserver", "spawn")


@dataclass(frozen=True)
class PoolOptions:
    workers: int | Literal["auto"] = "auto"
    start_method: str | None = None
    backend: str = "process"  # a name in _backends.BACKENDS
    max_tasks_per_worker: int | None = None
    max_worker_memory: int | None = None
    kill_grace: float = 1.0
    # the Pool's fixtures (given as a list, one fixture or None: made a checked FixtureSet
    # here), and how many failed set-ups of one fixture stop the tasks that need it (None:
    # never). See _fixtures.
    fixtures: FixtureSet = field(default_factory=FixtureSet)
    fixture_failures: int | None = 3
    # seconds a stopping worker has to tear its fixtures down and exit before it is killed
    fixture_teardown_timeout: float = 10.0
    # per-Call CPU (children included) and peak memory of the workers, in Outcome.history
    # (_worker.meter); False saves a few µs per Call
    telemetry: bool = True
    # the journal (``_journal``, docs/journal.md): a file every task is recorded in, and a
    # later run resumes from; what of the function and the arguments identifies a task; and
    # whether journaled failures run again
    journal: str | os.PathLike[str] | None = None
    journal_code: str = "name"
    journal_inputs: str = "digest"
    rerun_failed: bool = True
    # observability (docs/observability.md): tasks' log records reach the coordinator's
    # loggers; each task's stdout/stderr (fd level) kept in its Outcome, the last
    # ``output_limit`` bytes of each
    forward_logging: bool = True
    capture_output: bool = False
    output_limit: int | str = "1MiB"
    # backend="dask": where the calls run: a distributed.Client, a scheduler address or a
    # cluster object (LocalCluster, dask_jobqueue.SLURMCluster); see _backends.dask
    dask_client: Any = None

    def __post_init__(self) -> None:
        w = self.workers
        if w != "auto" and (isinstance(w, bool) or not isinstance(w, int) or w < 1):
            raise ConfigError(f"workers must be a positive integer or 'auto', not {w!r}")
        if self.start_method is not None and self.start_method not in START_METHODS:
            raise ConfigError(
                f"start_method must be one of {', '.join(START_METHODS)} or None, "
                f"not {self.start_method!r}"
            )
        lookup_backend(self.backend)  # an unknown name: a ConfigError naming the known ones
        _check_positive_int("max_tasks_per_worker", self.max_tasks_per_worker)
        if self.max_worker_memory is not None:
            object.__setattr__(
                self, "max_worker_memory", parse_size(self.max_worker_memory, "max_worker_memory")
            )
        check_seconds("kill_grace", self.kill_grace, allow_zero=True)
        object.__setattr__(self, "fixtures", as_fixture_set(self.fixtures))
        _check_positive_int("fixture_failures", self.fixture_failures)
        t = self.fixture_teardown_timeout
        if not is_positive(t):
            raise ConfigError(
                f"fixture_teardown_timeout must be a positive number of seconds, not {t!r}"
            )
        if not isinstance(self.telemetry, bool):
            raise ConfigError(f"telemetry must be True or False, not {self.telemetry!r}")
        _check_journal(self)
        for flag in ("forward_logging", "capture_output"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"{flag} must be True or False, not {getattr(self, flag)!r}")
        object.__setattr__(self, "output_limit", parse_size(self.output_limit, "output_limit"))
        if self.backend == "dask" or self.dask_client is not None:
            from ._backends.dask import check_options  # distributed is imported only then

            check_options(self)


@dataclass(frozen=True)
class RunOptions:
    timeout: float | str | RelativeTimeout | None = None
    retries: int = 0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    backoff: float = 0.1
    errors: ErrorPolicy = "raise"
    chunksize: int | Literal["auto"] = "auto"
    progress: bool | None = None
    resources: Mapping[str, float] | None = None
    memory_budget: int | str = "auto"
    # fn(key, effect) for each effect tasks record (corral.record), on the caller's thread,
    # in task order (_effects)
    on_effect: Callable[[Any, Any], Any] | None = None
    # a folder of one report per failed task and an index (_report.error_dir)
    error_dir: str | os.PathLike[str] | None = None
    # seconds between the plain progress lines written when stderr is not a terminal
    progress_interval: float = 30.0
    # survival (``_survival``, docs/reliability.md): ``timeout="3x"`` is relative to the median
    # duration of the batch's succeeded tasks, ``timeout_floor`` seconds until enough finished;
    # no task starts below ``min_free_memory`` of available memory; at ``deadline`` (seconds
    # from the start, or a datetime) or on SIGUSR1 the batch drains for ``drain_grace`` seconds.
    timeout_floor: float | None = None
    min_free_memory: int | str | None = None
    deadline: float | datetime.datetime | None = None
    drain_grace: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.timeout, str):
            object.__setattr__(self, "timeout", parse_relative_timeout(self.timeout))
        elif not isinstance(self.timeout, RelativeTimeout):
            check_seconds("timeout", self.timeout)
        check_seconds("timeout_floor", self.timeout_floor)
        if self.min_free_memory is not None:
            object.__setattr__(
                self, "min_free_memory", parse_size(self.min_free_memory, "min_free_memory")
            )
        if not is_datetime(self.deadline):
            check_seconds("deadline", self.deadline, allow_zero=True)
        check_seconds("drain_grace", self.drain_grace, allow_zero=True)
        if self.drain_grace is None:
            raise ConfigError("drain_grace must be a non-negative number of seconds, not None")
        if self.on_effect is not None and not callable(self.on_effect):
            raise ConfigError(
                f"on_effect must be a function of (key, effect) or None, not {self.on_effect!r}"
            )
        if self.error_dir is not None and not isinstance(self.error_dir, (str, os.PathLike)):
            raise ConfigError(f"error_dir must be a folder's path or None, not {self.error_dir!r}")
        object.__setattr__(self, "resources", _check_resources(self.resources))
        if self.memory_budget != "auto":
            object.__setattr__(
                self, "memory_budget", parse_size(self.memory_budget, "memory_budget")
            )
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ConfigError(f"retries must be a non-negative integer, not {self.retries!r}")
        retry_on: Any = self.retry_on
        if isinstance(retry_on, type):
            retry_on = (retry_on,)
        if not isinstance(retry_on, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in retry_on
        ):
            raise ConfigError(f"retry_on must be exception types, not {self.retry_on!r}")
        object.__setattr__(self, "retry_on", retry_on)
        check_seconds("backoff", self.backoff, allow_zero=True)
        if self.errors not in ("raise", "return"):
            raise ConfigError(f"errors must be 'raise' or 'return', not {self.errors!r}")
        cs = self.chunksize
        if cs != "auto" and (isinstance(cs, bool) or not isinstance(cs, int) or cs < 1):
            raise ConfigError(f"chunksize must be a positive integer or 'auto', not {cs!r}")
        check_seconds("progress_interval", self.progress_interval)
        if self.progress_interval is None:
            raise ConfigError("progress_interval must be a positive number of seconds, not None")
        if self.progress not in (None, True, False):
            raise ConfigError(f"progress must be True, False or None, not {self.progress!r}")


POOL_FIELDS = frozenset(f.name for f in fields(PoolOptions))
RUN_FIELDS = frozenset(f.name for f in fields(RunOptions))


def split_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split keyword options into pool and run options; an unknown name is a ConfigError."""
    unknown = sorted(set(options) - POOL_FIELDS - RUN_FIELDS)
    if unknown:
        raise ConfigError(unknown_options(unknown, POOL_FIELDS | RUN_FIELDS))
    pool = {k: v for k, v in options.items() if k in POOL_FIELDS}
    run = {k: v for k, v in options.items() if k in RUN_FIELDS}
    return pool, run


def unknown_options(unknown: Iterable[str], known: Iterable[str]) -> str:
    """The message for unknown option names: the closest known name for each (difflib:
    ``unknown option 'timout' (did you mean `timeout`?)``), or, when none is close, where
    the options are listed."""
    known = sorted(known)
    said = []
    for name in unknown:
        import difflib  # only for a misspelt option: not on every import

        close = difflib.get_close_matches(name, known, n=1)
        said.append(f"{name!r} (did you mean `{close[0]}`?)" if close else repr(name))
    plural = "s" if len(said) > 1 else ""
    hint = "" if all("did you mean" in s for s in said) else "; see help(corral.map) for options"
    return f"unknown option{plural} {', '.join(said)}{hint}"


def with_run_overrides(base: RunOptions, overrides: Mapping[str, Any]) -> RunOptions:
    _, run = split_options(overrides)
    if set(overrides) - RUN_FIELDS:
        bad = ", ".join(sorted(set(overrides) - RUN_FIELDS))
        raise ConfigError(f"option(s) {bad} belong to the Pool and cannot change per call")
    return replace(base, **run) if run else base


def resolve_workers(workers: int | Literal["auto"], n_tasks: int | None = None) -> int:
    """The number of worker processes to start.

    ``"auto"`` means the CPUs this process may use (affinity and cgroup aware), or
    ``CORRAL_WORKERS`` when set; never more than the number of tasks when that is known.
    """
    if workers == "auto":
        env = os.environ.get("CORRAL_WORKERS")
        count = _env_workers(env) if env else cpu_count()
    else:
        count = workers
    if n_tasks is not None:
        count = min(count, max(1, n_tasks))
    return count


def _env_workers(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        raise ConfigError(f"CORRAL_WORKERS must be a positive integer, not {value!r}") from None
    if count < 1:
        raise ConfigError(f"CORRAL_WORKERS must be a positive integer, not {value!r}")
    return count


def serial_forced() -> bool:
    """``CORRAL_WORKERS=1`` runs everything in-process, for debugging with pdb."""
    return os.environ.get("CORRAL_WORKERS", "").strip() == "1"


_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}  # fmt: skip


@functools.cache
def _size() -> re.Pattern[str]:
    """Compiled on first use, not at every import (issue 15, start-up)."""
    return re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")


def parse_size(value: int | float | str, what: str = "size") -> int:
    """Bytes from ``6_000_000``, ``"6GiB"``, ``"512 MB"`` (decimal and binary units)."""
    if isinstance(value, bool):
        raise ConfigError(f"{what} must be a size like 6GiB or a number of bytes, not {value!r}")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        match = _size().match(str(value))
        if not match or match.group(2).lower() not in _UNITS:
            raise ConfigError(f"{what} must be a size like 6GiB or 512MB, not {value!r}")
        number, unit = float(match.group(1)), match.group(2).lower()
    size = number * _UNITS[unit]
    if not math.isfinite(size) or size <= 0:
        raise ConfigError(f"{what} must be positive, not {value!r}")
    return int(size)


def is_positive(value: Any, *, allow_zero: bool = False, allow_inf: bool = False) -> bool:
    """The one check of a positive number in corral: an int or float (not a bool, not NaN),
    above zero (or zero, with ``allow_zero``), finite unless ``allow_inf``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return False
    if math.isinf(value) and not allow_inf:
        return False
    return value > 0 or (allow_zero and value == 0)


def check_seconds(name: str, value: Any, *, allow_zero: bool = False) -> None:
    """A duration option: None, or a positive (non-negative with ``allow_zero``) number of
    seconds; infinity is accepted, as "no limit" is by None."""
    if value is not None and not is_positive(value, allow_zero=allow_zero, allow_inf=True):
        need = "non-negative" if allow_zero else "positive"
        raise ConfigError(f"{name} must be a {need} number of seconds or None, not {value!r}")


def _check_resources(value: Any) -> dict[str, float] | None:
    """``resources={"orcaflex": 4, "gpu": 1}``: capacities of counted resources."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"resources must be a mapping of name to capacity, not {value!r}")
    checked = {}
    for name, capacity in value.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"resource names must be non-empty strings, not {name!r}")
        if not is_positive(capacity):
            raise ConfigError(f"resources[{name!r}] must be a positive number, not {capacity!r}")
        checked[name] = float(capacity)
    return checked


def _check_positive_int(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer or None, not {value!r}")


def _check_journal(options: PoolOptions) -> None:
    journal = options.journal
    if journal is not None:
        if not isinstance(journal, (str, os.PathLike)) or not os.fspath(journal):
            raise ConfigError(f"journal must be a file path or None, not {journal!r}")
        if os.path.isdir(journal):
            raise ConfigError(f"journal must be a file, not the folder {os.fspath(journal)!r}")
    if (options.journal_code, options.journal_inputs) != ("name", "digest"):
        from ._journal.identity import check_modes  # hashlib: not on every first map

        check_modes(options.journal_code, options.journal_inputs)
    if not isinstance(options.rerun_failed, bool):
        raise ConfigError(f"rerun_failed must be True or False, not {options.rerun_failed!r}")
