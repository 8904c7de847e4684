"""Real dependencies of some tests (redis-server, pyzmq): under CI a missing one fails the test,
elsewhere it skips it with the reason (``make test`` installs them)."""

from __future__ import annotations

import importlib
import os
import shutil
from types import ModuleType

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(reason: str) -> None:
    if in_ci():
        pytest.fail(f"{reason} (required under CI)")
    pytest.skip(reason)


def require_program(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing(f"{name} is not installed; `make test` installs it (apt-get install {name})")
    return path  # type: ignore[return-value]


def require_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(f"Python package {name} is not installed; pip install -e '.[test]'")
        raise
