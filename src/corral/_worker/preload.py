"""Imported by the fork server only, as its preload module (``_backends.process``).

Preloading is the one hook multiprocessing gives into the fork server: importing this names the
server process and loads the worker code once, so that each worker forks with it loaded.
Nothing else imports this module.
"""

from __future__ import annotations

import os

from .._proctitle import set_title
from . import loop  # noqa: F401 - preloaded so that forked workers need not import it

set_title(f"corral fork server [pool {os.getppid()}]")
