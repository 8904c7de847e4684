"""``corral run`` and ``corral exec``: a batch from the command line, supervised.

Both build ``corral.Task`` objects (key: the input, or the row), check everything before any
work starts (settings, inputs, per-task needs, the results file), run them with
``corral.run(..., errors="return")``, write the results, print the summary and say how it
went in the exit status: 0 every task succeeded, 1 some failed, 75 the run drained
(``main`` maps the rest).
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
from collections.abc import Callable
from typing import Any

from .._errors import ConfigError
from .._report.report import Report
from .._task import Task
from .inputs import check_out, expand_inputs, read_params, row_key, write_out
from .options import amounts, settings_from

EXIT_DRAINED = 75
"""The run drained (SIGUSR1, ``deadline``): what finished is journaled and in ``--out``, the
rest was cancelled; the same command (or ``corral retry``) finishes it. sysexits' EX_TEMPFAIL,
"try again later": what a job script tests to requeue itself."""

EXPORTS = frozenset({"trace", "html"})
"""Settings the command line handles itself, after the run (``Report.to_trace``/``to_html``)."""


def run_command(args: argparse.Namespace) -> int:
    """``corral run MODULE:FUNCTION [INPUT ...]``."""
    fn = load_function(args.function)
    settings = settings_from(args)
    needs = task_needs(args)
    check_out(args.out)
    tasks: list[Task] = []
    if args.params is not None:
        if args.inputs or args.inputs_file:
            raise ConfigError("--params cannot go with inputs or --inputs: give one of them")
        for row in read_params(args.params):
            key = row_key(row)
            tasks.append(Task(fn, kwargs=row, key=key, **needs, locks=_locks(args, key)))
    else:
        for value in _inputs(args):
            tasks.append(Task(fn, (value,), key=value, **needs, locks=_locks(args, value)))
    return _run(tasks, settings.options(_api_run(), EXPORTS), args)


def exec_command(args: argparse.Namespace) -> int:
    """``corral exec 'COMMAND {}' [INPUT ...]``."""
    from .._command import has_placeholder, slots_dir
    from .._command import run_command as run_program
    from .._options import resolve_workers

    template = args.template
    if not template.strip():
        raise ConfigError("the command is empty")
    if not has_placeholder(template):
        template += " {}"  # as GNU parallel does: the input goes at the end
    settings = settings_from(args)
    needs = task_needs(args)
    check_out(args.out)
    values = _inputs(args)
    options = settings.options(_api_run(), EXPORTS)
    slots = resolve_workers(options.get("workers", "auto"), len(values))
    run_id = _run_id(options.get("journal"), args)
    tasks = [
        Task(
            run_program,
            (template, value),
            kwargs={"job": job, "run": run_id, "slots": slots, "workdir": args.workdir},
            key=value,
            **needs,
            locks=_locks(args, value),
        )
        for job, value in enumerate(values, start=1)
    ]
    try:
        return _run(tasks, options, args, show_output=True)
    finally:
        shutil.rmtree(slots_dir(run_id), ignore_errors=True)


def _run_id(journal: Any, args: argparse.Namespace) -> str:
    """What names this run's slot locks (``{%}``). It is one of each task's arguments, so a
    journaled run's is the journal's (the same in each run resuming it: the tasks' identity
    is unchanged; the journal's lock keeps two runs from sharing it)."""
    if journal is None:
        return f"{os.getpid()}-{id(args)}"
    import hashlib

    digest = hashlib.sha256(os.fsencode(os.path.abspath(os.fspath(journal)))).hexdigest()
    return f"journal-{digest[:16]}"


def _run(
    tasks: list[Task], options: dict[str, Any], args: argparse.Namespace, show_output: bool = False
) -> int:
    import corral

    if not tasks:
        raise ConfigError("nothing to run: give inputs, --inputs FILE or --params FILE")
    options["errors"] = "return"  # the CLI reports failures itself, by exit status
    exports = {name: options.pop(name) for name in EXPORTS if options.get(name) is not None}
    if options.get("journal") is not None:  # what ran, for `corral retry`
        from .journal import record

        record(options["journal"], args, None if args.command == "run" and args.params
               else [t.key for t in tasks])  # fmt: skip
    try:
        report: Report = corral.run(tasks, **options)
    except KeyboardInterrupt as interrupt:
        # Ctrl-C: the library stopped the run; keep what finished, then exit 130 (main)
        partial = getattr(interrupt, "report", None)
        if partial is not None:
            _export(partial, exports)
            if args.out is not None:
                write_out(args.out, partial.outcomes)
            print(partial.summary(), file=sys.stderr)
        raise
    _export(report, exports)
    if show_output:
        _print_output(report)
    if args.out is not None:
        write_out(args.out, report.outcomes)
    print(report.summary(), file=sys.stderr)
    if report.drained is not None:
        print(f"corral: the run drained ({report.drained}): run it again to finish it",
              file=sys.stderr)  # fmt: skip
        return EXIT_DRAINED
    return 0 if report.ok else 1


def _export(report: Report, exports: dict[str, Any]) -> None:
    """``--trace F`` and ``--html F`` (or ``trace:``/``html:`` settings): the run's exports."""
    if "trace" in exports:
        report.to_trace(exports["trace"])
    if "html" in exports:
        report.to_html(exports["html"])


def _print_output(report: Report) -> None:
    """Each program's standard output, in input order, as GNU parallel's ``--keep-order``."""
    for outcome in report.outcomes:
        value = outcome.value if outcome.error is None else outcome.error
        stdout = getattr(value, "stdout", "")
        if stdout:
            sys.stdout.write(stdout if stdout.endswith("\n") else stdout + "\n")
    sys.stdout.flush()


def _inputs(args: argparse.Namespace) -> list[str]:
    """The inputs: as ``corral retry`` recorded them, or the words and ``--inputs`` file."""
    recorded = getattr(args, "recorded_inputs", None)
    if recorded is not None:
        return list(recorded)
    return expand_inputs(args.inputs, args.inputs_file)


def task_needs(args: argparse.Namespace) -> dict[str, Any]:
    needs: dict[str, Any] = {}
    if args.uses:
        needs["uses"] = amounts(args.uses, "--uses")
    if args.memory is not None:
        needs["memory"] = args.memory
    return needs


def _locks(args: argparse.Namespace, key: str) -> list[str]:
    return [key] if args.lock_by_input else []


def _api_run() -> Callable[..., Any]:
    from .. import _api

    return _api.run


def load_function(ref: str) -> Callable[..., Any]:
    """``package.module:function`` (the working directory importable, as ``python -m``
    makes it, for workers too)."""
    module_name, colon, attr = ref.partition(":")
    if not colon or not module_name or not attr:
        raise ConfigError(f"expected MODULE:FUNCTION (like mypkg.sims:simulate), not {ref!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    # the workers import the function's module by name too
    path = os.environ.get("PYTHONPATH", "")
    if cwd not in path.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (cwd, path) if p)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r}: {exc}") from None
    except Exception as exc:  # the module's own code failed: say so, in one line
        raise ConfigError(f"importing {module_name!r} raised {type(exc).__name__}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"module {module_name!r} has no {attr!r}") from None
    if not callable(obj):
        raise ConfigError(f"{ref} is not callable")
    return obj  # type: ignore[no-any-return]
