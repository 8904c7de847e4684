"""``corral status``, ``corral report`` and ``corral retry``: a run's journal, read back.

``status`` and ``report`` read a snapshot (``corral.open_journal``: one SQLite read
transaction), so they work while a run is still writing the journal. ``retry`` runs the
command the journal recorded (``record``: ``corral run``/``exec --journal`` store their
arguments, working directory and expanded inputs in the journal's ``meta`` table) again
against the same journal: its successes are taken as they are (``cached``), its failures
and the tasks that never finished run again (resume, ``rerun_failed``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from .._errors import ConfigError, JournalError
from .._outcome import Outcome

COMMAND = "command"
"""The ``meta`` row where ``corral run``/``exec`` record what they ran."""


def open_journal(path: str) -> Any:
    from .._journal.reader import open_journal as opener

    try:
        return opener(path)
    except JournalError as exc:  # missing, damaged, foreign: a usage error (exit 2)
        raise ConfigError(str(exc)) from None


# -- recording (corral run / exec) --------------------------------------------------------


def record(journal: Any, args: argparse.Namespace, inputs: list[str] | None) -> None:
    """Record in ``journal`` what this command runs, for ``corral retry``: the arguments as
    given, the working directory, and the inputs as expanded now (a later glob may match
    other files). Refused here, before any work, when another run writes the journal."""
    from .._journal.store import record_meta

    doc = {
        "command": args.command,
        "argv": list(getattr(args, "argv", None) or []),
        "cwd": os.getcwd(),
        "inputs": inputs,
    }
    path = Path(os.fspath(journal)).absolute()
    if not path.parent.is_dir():
        raise ConfigError(f"journal {path}: its folder {path.parent} does not exist")
    try:
        record_meta(path, COMMAND, json.dumps(doc))
    except JournalError as exc:
        raise ConfigError(str(exc)) from None


# -- status ----------------------------------------------------------------------------------


def status_command(args: argparse.Namespace) -> int:
    """Counts by status, then the failed keys with their reasons, then the unfinished."""
    journal = open_journal(args.journal)
    counts = {k: n for k, n in journal.counts.items() if n}
    total = sum(counts.values())
    shown = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing journaled yet"
    print(f"{args.journal}: {total} tasks: {shown}")
    for run in journal.runs:
        state = "ended" if run.ended is not None else "running or stopped"
        print(f"  run {run.run}: pid {run.pid} on {run.host}, {state}")
    failures = journal.failures
    if failures:
        print("failed:")
        for outcome in failures:
            print(f"  {outcome.key}  {outcome.status.value}  {_reason(outcome)}")
    if journal.unfinished:
        print("unfinished (running now, or stopped with their run):")
        for _, key in journal.unfinished:
            print(f"  {key}")
    return 0 if not failures else 1


def _reason(outcome: Outcome) -> str:
    error = outcome.error
    return outcome.status.value if error is None else f"{type(error).__name__}: {error}"


# -- report ----------------------------------------------------------------------------------


def report_command(args: argparse.Namespace) -> int:
    """The summary of the run a journal recorded; ``--out`` its results, ``--html`` and
    ``--trace`` its exports (``Report.to_html``/``to_trace``), ``--errors`` an error report
    per failure (``_report.error_dir``)."""
    from .inputs import check_out, write_out

    check_out(args.out)
    journal = open_journal(args.journal)
    report = report_of(journal.outcomes)
    if args.out is not None:
        write_out(args.out, report.outcomes)
    if args.html is not None:
        report.to_html(args.html)
    if args.trace is not None:
        report.to_trace(args.trace)
    if args.errors is not None:
        _error_reports(args.errors, report.outcomes)
    print(report.summary(), file=sys.stderr)
    return 0 if report.ok else 1


def report_of(outcomes: list[Outcome]) -> Any:
    """A Report of journaled outcomes: its wall time from the first start to the last end,
    its workers the slots that ran them."""
    from .._report.report import Report

    starts = [o.started for o in outcomes if o.started is not None]
    ends = [o.finished for o in outcomes if o.finished is not None]
    slots = {o.worker for o in outcomes if o.worker is not None and o.worker >= 0}
    return Report(
        outcomes,
        wall_seconds=max(ends) - min(starts) if starts and ends else 0.0,
        workers=max(len(slots), 1),
        started=min(starts) if starts else None,
    )


def _error_reports(folder: str, outcomes: Any) -> None:
    from .._report.error_dir import ErrorReports

    def unknown_call(position: int, item: Any) -> Any:
        raise LookupError("a journal keeps digests of the arguments, not the arguments")

    reports = ErrorReports(folder, unknown_call)
    for position, outcome in enumerate(outcomes):
        reports.add(position, outcome)
    reports.finish()


# -- retry -----------------------------------------------------------------------------------


def retry_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The arguments of the journal's recorded command, to run again against it (``main``
    runs them): what failed or never finished runs, the rest is ``cached``."""
    path = Path(args.journal).absolute()
    journal = open_journal(str(path))
    recorded = journal.meta.get(COMMAND)
    if recorded is None:
        raise ConfigError(
            f"journal {path}: no corral command is recorded in it (it was written through "
            "the API, journal=, or by an older corral): run that program again to resume it"
        )
    doc = json.loads(recorded)
    failed = len(journal.failures)
    unfinished = len(journal.unfinished)
    print(
        f"corral retry: {doc['command']} of {path}: {failed} failed and {unfinished} "
        "unfinished task(s) run again; the journaled successes are kept",
        file=sys.stderr,
    )
    try:
        os.chdir(doc["cwd"])
    except OSError as exc:
        raise ConfigError(f"the recorded working directory {doc['cwd']}: {exc}") from None
    again = parser.parse_args(doc["argv"])
    again.journal = str(path)
    again.recorded_inputs = doc["inputs"]
    again.argv = doc["argv"]
    again.debug = args.debug or again.debug
    if args.workers is not None:
        again.workers = args.workers
    if args.out is not None:
        again.out = args.out
    return again
