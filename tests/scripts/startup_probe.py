"""A task function that imports nothing: run in a worker, it reports which modules the
worker had loaded (``tests/test_startup.py``)."""

import sys


def loaded(names: list[str]) -> list[str]:
    return [name for name in names if name in sys.modules]
