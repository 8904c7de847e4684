"""An Executor at interpreter exit: ``submit`` from an exit handler that runs after corral's
own (registered before corral was used: atexit runs handlers last-in first-out).

    python executor_exit.py WORK_DIR

Writes ``late-submit`` in WORK_DIR: the name of the exception that late ``submit`` raised.
"""

from __future__ import annotations

import atexit
import sys
from pathlib import Path

import corral

work = Path(sys.argv[1])
executor: corral.Executor | None = None


def late_submit() -> None:
    assert executor is not None
    try:
        executor.submit(abs, -1)
    except BaseException as exc:
        (work / "late-submit").write_text(type(exc).__name__)
    else:
        (work / "late-submit").write_text("accepted")


if __name__ == "__main__":
    atexit.register(late_submit)  # before corral registers its own exit hook
    executor = corral.Executor(max_workers=1)
    assert executor.submit(abs, -3).result() == 3
