"""Every setting's name, type, bounds and meaning, and the team's spelling of some.

``Model`` is the pydantic model of the settings (None: not set); ``EXPECTED`` says in words
what each key takes (errors quote it); ``TEAM_KEYS`` maps the ``parallel_processing``
block's keys onto corral's.
"""

from __future__ import annotations

from typing import Literal

import pydantic
from pydantic import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

PATH_KEYS = ("journal", "error_dir", "trace", "html")
"""Paths; relative ones in a file are relative to that file's directory."""
LIST_KEYS = ("retry_on", "fixtures")
MAP_KEYS = ("resources",)
PASS_THROUGH = (
    "capture_output", "forward_logging", "progress_interval", "journal", "error_dir",
    "trace", "html", "journal_code", "journal_inputs", "rerun_failed", "telemetry",
    "output_limit", "timeout_floor", "min_free_memory", "deadline", "drain_grace",
)  # fmt: skip
"""Options of features provided elsewhere in corral, handed to the API by name."""

NULLABLE = frozenset(
    {"timeout", "start_method", "progress", "max_tasks_per_worker", "max_worker_memory",
     "resources", "fixture_failures", *PASS_THROUGH}
)  # fmt: skip
"""Keys whose null means something (no limit, automatic, off); null elsewhere is an error."""

EXPECTED = {
    "workers": "a positive integer or 'auto'",
    "timeout": "a positive number of seconds, or a multiple of the median task like '3x'",
    "retries": "a non-negative integer",
    "retry_on": "a list of exception names (OSError, mypkg.errors.Flaky)",
    "backoff": "a non-negative number of seconds",
    "errors": "'raise' or 'return'",
    "chunksize": "a positive integer or 'auto'",
    "start_method": "'fork', 'forkserver' or 'spawn'",
    "backend": "the name of a backend ('process', 'serial')",
    "progress": "true or false",
    "capture_output": "true or false",
    "forward_logging": "true or false",
    "progress_interval": "a positive number of seconds",
    "max_tasks_per_worker": "a positive integer",
    "max_worker_memory": "a size like 4GiB or a number of bytes",
    "kill_grace": "a non-negative number of seconds",
    "resources": "a mapping of resource name to a positive capacity",
    "memory_budget": "a size like 64GiB, or 'auto'",
    "journal": "a file path",
    "error_dir": "a directory path",
    "trace": "a file path",
    "html": "a file path",
    "fixtures": "a list of module:name references to @corral.fixture functions",
    "fixture_failures": "a positive integer",
    "fixture_teardown_timeout": "a positive number of seconds",
    "journal_code": "'name', 'source' or 'ignore'",
    "journal_inputs": "'digest' or 'key'",
    "rerun_failed": "true or false",
    "telemetry": "true or false",
    "output_limit": "a size like 1MiB or a number of bytes",
    "timeout_floor": "a positive number of seconds",
    "min_free_memory": "a size like 4GiB or a number of bytes",
    "deadline": "a positive number of seconds from the start",
    "drain_grace": "a non-negative number of seconds",
}

TEAM_KEYS = {
    # the team's spelling: (corral key, what it expects)
    "enabled": ("backend", "true or false (false: the serial backend, same results)"),
    "max_workers": ("workers", "a positive integer or 'auto' (usable CPUs)"),
    "timeout_per_file": ("timeout", "a positive number of seconds"),
    "save_error_reports": ("error_dir", "true or false (true: errors/ beside the file)"),
    "progress_reporting": ("progress", "true or false"),
}


class Model(pydantic.BaseModel):
    """The types and bounds of every setting (None: not set). Strict: a string is not a
    number; environment and command-line text is parsed first (``validate._from_text``)."""

    model_config = pydantic.ConfigDict(strict=True, extra="forbid", frozen=True)

    workers: PositiveInt | Literal["auto"] | None = None
    timeout: PositiveFloat | str | None = None
    retries: NonNegativeInt | None = None
    retry_on: list[str] | None = None
    backoff: NonNegativeFloat | None = None
    errors: Literal["raise", "return"] | None = None
    chunksize: PositiveInt | Literal["auto"] | None = None
    start_method: Literal["fork", "forkserver", "spawn"] | None = None
    backend: str | None = None
    progress: bool | None = None
    capture_output: bool | None = None
    forward_logging: bool | None = None
    progress_interval: PositiveFloat | None = None
    max_tasks_per_worker: PositiveInt | None = None
    max_worker_memory: PositiveInt | str | None = None
    kill_grace: NonNegativeFloat | None = None
    resources: dict[str, PositiveFloat] | None = None
    memory_budget: PositiveInt | str | None = None
    journal: str | None = None
    error_dir: str | None = None
    trace: str | None = None
    html: str | None = None
    fixtures: list[str] | None = None
    fixture_failures: PositiveInt | None = None
    fixture_teardown_timeout: PositiveFloat | None = None
    journal_code: Literal["name", "source", "ignore"] | None = None
    journal_inputs: Literal["digest", "key"] | None = None
    rerun_failed: bool | None = None
    telemetry: bool | None = None
    output_limit: PositiveInt | str | None = None
    timeout_floor: PositiveFloat | None = None
    min_free_memory: PositiveInt | str | None = None
    deadline: PositiveFloat | None = None
    drain_grace: NonNegativeFloat | None = None


KEYS = tuple(Model.model_fields)
assert set(KEYS) == set(EXPECTED)
