"""Configuration: ``corral.Settings`` from files, ``CORRAL_*`` variables and arguments.

- ``sources``: reading files (YAML, TOML, ``[tool.corral]``) with the line of every key,
  finding them from the working directory up, and the environment; each value tagged with
  its ``Source``.
- ``keys``: every setting's type and meaning (a pydantic model), and the team's spelling.
- ``validate``: merged layers checked, each problem at its source.
- ``settings``: the ``Settings`` object: layers merged by precedence, validated, turned into
  the API's keyword options.
- ``apply``: the hook ``corral.map``/``imap``/``run`` and ``Pool`` call for ``config=``.
"""

from __future__ import annotations

from .apply import apply_config
from .settings import Settings
from .sources import Source, discover

__all__ = ["Settings", "Source", "apply_config", "discover"]
