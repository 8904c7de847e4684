"""Task functions several test files send to workers (module level: workers import them by
reference, and this folder is on their path)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

WAIT = 30.0
"""How long a task waits for a file another task writes: generous, never the expected path."""


def wait_for_file(path, timeout=WAIT):  # type: ignore[no-untyped-def]
    """Whether ``path`` appeared within ``timeout`` seconds (polled)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def write_then_fail_odd(arg):  # type: ignore[no-untyped-def]
    """Leave ``ran-<x>`` in the directory, then fail for odd ``x``."""
    directory, x = arg
    Path(directory, f"ran-{x}").write_text("")
    if x % 2:
        raise ValueError(f"odd {x}")
    return x


def outcomes_of_writes(attempts: dict[str, Callable[[], object]]) -> dict[str, str]:
    """What each write attempt did: "wrote", or the name of the exception it raised."""
    out = {}
    for what, attempt in attempts.items():
        try:
            attempt()
            out[what] = "wrote"
        except Exception as exc:
            out[what] = type(exc).__name__
    return out


def write_then_return(arg):  # type: ignore[no-untyped-def]
    """Leave ``ran-<x>`` in the directory, then return ``x * 10``."""
    directory, x = arg
    Path(directory, f"ran-{x}").write_text("")
    return x * 10


def fail_until_file(arg):  # type: ignore[no-untyped-def]
    """Fail (leaving ``try-<n>``) until ``directory`` holds ``fails`` tries, then return ``x``."""
    directory, x, fails = arg
    tries = len(list(Path(directory).glob(f"try-{x}-*")))
    Path(directory, f"try-{x}-{tries}").write_text("")
    if tries < fails:
        raise ValueError(f"try {tries} of {x}")
    return x


def environment_variable(name: str) -> str | None:
    """The worker's value of the environment variable ``name``."""
    return os.environ.get(name)
