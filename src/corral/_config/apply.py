"""``config=`` for ``corral.map``/``imap``/``run`` and ``Pool``: settings under arguments.

Precedence: the arguments of the call > ``CORRAL_*`` environment variables > the
configuration file > corral's defaults. An argument left at its default value (``timeout=None``,
``retries=0``, ``workers="auto"``, ...) does not count as given: it cannot be told apart from
one not written, so the file's value holds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .settings import Settings, api_defaults


def apply_config(
    config: Any, workers: Any, options: Mapping[str, Any], api: Callable[..., Any]
) -> tuple[Any, dict[str, Any]]:
    """``(workers, options)`` for ``api``, with the settings of ``config`` under them (see
    the module text)."""
    # A Settings object is used as it is (it already holds what its maker meant); a path,
    # (path, section) or "auto" is read under the CORRAL_* variables.
    settings = config if isinstance(config, Settings) else Settings.resolve(config)
    from_config = settings.options(api)
    defaults = api_defaults()
    given = {k: v for k, v in options.items() if not _is_default(k, v, defaults)}
    merged = {**from_config, **given}
    if workers == "auto" and "workers" in merged:
        workers = merged.pop("workers")
    else:
        merged.pop("workers", None)
    return workers, merged


def _is_default(key: str, value: Any, defaults: Mapping[str, Any]) -> bool:
    if key not in defaults:
        return False
    default = defaults[key]
    return value is default or (type(value) is type(default) and value == default)
