"""``corral status JOURNAL`` and ``corral report JOURNAL``: reading a run's journal.

Built against a small interface of the journal (``corral.open_journal(path)`` returning an
object with ``counts()``, ``failures()`` and ``outcomes()``), which the journal feature
provides; on a corral without it, these commands say so (exit 2). ``status`` works while a
run is still writing the journal: it reads what is there.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .._errors import ConfigError


def open_journal(path: str) -> Any:
    import corral

    opener = getattr(corral, "open_journal", None)
    if opener is None:
        raise ConfigError(
            "reading a journal needs the journal feature, which this version of corral "
            "does not have"
        )
    try:
        return opener(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such journal") from None


def status_command(args: argparse.Namespace) -> int:
    """Counts by status, then the failed keys with their reasons, then the unfinished."""
    journal = open_journal(args.journal)
    counts = {getattr(k, "value", k): n for k, n in journal.counts().items() if n}
    total = sum(counts.values())
    print(f"{args.journal}: {total} tasks: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    failures = list(journal.failures())
    if failures:
        print("failed:")
        for outcome in failures:
            status = getattr(outcome.status, "value", outcome.status)
            error = outcome.error
            reason = (
                f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else error
            )
            print(f"  {outcome.key}  {status}  {reason}")
    unfinished = [o.key for o in journal.outcomes() if _unfinished(o)]
    if unfinished:
        print("unfinished:")
        for key in unfinished:
            print(f"  {key}")
    return 0 if not failures else 1


def _unfinished(outcome: Any) -> bool:
    return getattr(outcome.status, "value", outcome.status) in ("pending", "running", "queued")


def report_command(args: argparse.Namespace) -> int:
    """The summary of the run a journal recorded; ``--out`` its results."""
    from .._report.report import Report
    from .inputs import check_out, write_out

    check_out(args.out)
    for flag in ("html", "trace", "errors"):
        if getattr(args, flag) is not None:
            raise ConfigError(
                f"--{flag} needs the report exports, which this version of corral does not have"
            )
    journal = open_journal(args.journal)
    report = Report(list(journal.outcomes()))
    if args.out is not None:
        write_out(args.out, report.outcomes)
    print(report.summary(), file=sys.stderr)
    return 0 if report.ok else 1
