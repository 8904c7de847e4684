"""``@public``: marks a name of the public API as living in ``corral``.

Public objects say ``corral.X`` in their reprs and pickles, whichever internal module defines
them, so that pickles (in error reports and journals) survive moving code between internal
modules. Set where each object is defined, so it holds even in a worker process that never
imported the public names.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def public(obj: T) -> T:
    obj.__module__ = "corral"
    return obj
