"""Configuration: ``corral.Settings`` from files, ``CORRAL_*`` variables and arguments.

- ``sources``: reading files (YAML, TOML, ``[tool.corral]``) with the line of every key,
  finding them from the working directory up, and the environment; each value tagged with
  its ``Source``.
- ``settings``: the ``Settings`` object: layers merged by precedence, validated by pydantic,
  turned into the API's keyword options.
- ``apply``: the hook ``corral.map``/``imap``/``run`` and ``Pool`` call for ``config=``.
"""

from __future__ import annotations

from .apply import apply_config
from .settings import Settings
from .sources import Source, discover

__all__ = ["Settings", "Source", "apply_config", "discover"]
