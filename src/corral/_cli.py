"""The ``corral`` command line: ``corral demo`` and ``corral info``."""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import sys
from collections.abc import Sequence

from . import __version__
from ._platform import cpu_count, default_start_method


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="corral", description=__doc__)
    parser.add_argument("--version", action="version", version=f"corral {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run a demo batch with progress and a summary")
    demo.add_argument("--workers", default="auto", help="worker processes (default: auto)")
    demo.add_argument(
        "--out", default=".", help="where report.html and trace.json go (default: here)"
    )
    commands.add_parser("info", help="what corral sees on this machine")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import demo as run_demo

        workers = args.workers if args.workers == "auto" else int(args.workers)
        report = run_demo(workers, args.out)
        expected = {"ok": 298, "failed": 1, "timeout": 1}
        got = {s.value: n for s, n in report.counts().items() if n}
        return 0 if got == expected else 1
    if args.command == "info":
        print(f"corral {__version__} on Python {platform.python_version()} ({sys.platform})")
        print(f"usable CPUs (affinity and cgroup aware): {cpu_count()}")
        print(f"default start method: {default_start_method()}")
        print(f"available start methods: {', '.join(multiprocessing.get_all_start_methods())}")
        return 0
    return 2  # pragma: no cover - argparse rejects unknown commands
