"""The ``corral`` command line (``python -m corral`` is the same).

Commands: ``run`` (a Python function over inputs), ``exec`` (a program over inputs, GNU
parallel's way), ``config show`` (the effective settings and where each came from),
``status``, ``report`` and ``retry`` (a run's journal), ``demo`` and ``info``. Modules: ``options``
(the shared options, turned into settings), ``inputs`` (globs, input lists, parameter
tables, results files), ``commands`` (run, exec), ``journal`` (status, report, retry).

Exit status: 0 every task succeeded, 1 some task failed, 2 a usage or configuration error
(nothing ran), 75 the run drained (SIGUSR1, deadline: run it again), 130 interrupted
(Ctrl-C). An error is one line on standard error; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from .._errors import ConfigError
from .options import add_config_options, add_run_options

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

RUN_EXAMPLES = """\
examples:
  corral run sims.model:simulate 'cases/*.sim'            # one task per file, sorted
  corral run sims.model:simulate --inputs cases.txt --timeout 3600 --retries 2
  corral run sims.model:simulate --params sweep.csv --out results.parquet
  corral run post:reduce 'out/*.nc' --lock-by-input --memory 2GiB --workers 8
  corral run fe:solve 'm/*.inp' --resource orcaflex=4 --uses orcaflex=1

Each input is passed as the function's one argument (a path string); each row of
--params as keyword arguments. Settings come from --options > CORRAL_* variables >
the settings file (--config, or corral.yaml/corral.toml/[tool.corral] found from here
up) > defaults. Exit status: 0 all succeeded, 1 some failed, 2 usage or configuration
error, 75 drained (SIGUSR1, deadline: run it again), 130 interrupted.
"""

EXEC_EXAMPLES = """\
examples:
  corral exec 'gzip -k {}' 'logs/*.log'
  corral exec 'solver {} -o {.}.out' 'cases/*.inp' --timeout 600 --retries 1
  corral exec 'post {/.} --port {port} --token {token}' --inputs runs.txt
  corral exec './run.sh {}' 'cases/*' --workdir 'work/{/.}' --out runs.jsonl

Replacement strings (GNU parallel's): {} the input, {.} without its extension,
{/} its base name, {//} its directory, {/.} base name without extension, {#} the job
number, {%} the worker slot (1..N), {port} a free TCP port and {token} a random token,
both the worker's own. Without any, the input is added at the end. The command runs
under sh -c in a process group of its own; a timeout kills that whole group. A non-zero
exit status or a signal fails the task (CommandFailed: exit code, signal, last lines of
stderr). Each program's standard output is printed after the run, in input order.
"""

CONFIG_EXAMPLES = """\
examples:
  corral config show
  corral config show --config analysis.yml --section parallel_processing
  CORRAL_TIMEOUT=60 corral config show
"""


STATUS_EXAMPLES = """\
examples:
  corral status runs/sweep.journal         # counts, failed and unfinished keys (live)
  corral report runs/sweep.journal --out results.csv --html report.html
  corral report runs/sweep.journal --trace trace.json --errors errors/
  corral retry runs/sweep.journal          # run what failed or never finished again

status and report read a journal written by `corral run --journal FILE` (or journal= in
the API), also while a run writes it. retry runs the command that `corral run` or
`corral exec` recorded in the journal again, in the same folder, on the same inputs: the
journaled successes are kept (cached), the failures and unfinished tasks run again.
A journal holds pickles: only read one you trust.
"""


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="corral",
        description="Run batches of independent jobs on supervised worker processes.",
        epilog="`corral COMMAND --help` shows each command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"corral {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    raw = argparse.RawDescriptionHelpFormatter

    run = commands.add_parser(
        "run", help="map a Python function over inputs", epilog=RUN_EXAMPLES, formatter_class=raw
    )
    run.add_argument("function", metavar="MODULE:FUNCTION", help="e.g. sims.model:simulate")
    run.add_argument("inputs", metavar="INPUT", nargs="*", help="inputs or globs ('sims/*.sim')")
    run.add_argument("--inputs", dest="inputs_file", metavar="FILE", help="one input per line")
    run.add_argument(
        "--params", metavar="FILE", help="rows as keyword arguments: .csv/.jsonl/.parquet"
    )
    add_run_options(run)
    add_config_options(run)
    run.add_argument("--debug", action="store_true", help="show tracebacks of errors")

    exe = commands.add_parser(
        "exec", help="run a program per input", epilog=EXEC_EXAMPLES, formatter_class=raw
    )
    exe.add_argument("template", metavar="COMMAND", help="a shell command with {} strings")
    exe.add_argument("inputs", metavar="INPUT", nargs="*", help="inputs or globs")
    exe.add_argument("--inputs", dest="inputs_file", metavar="FILE", help="one input per line")
    exe.add_argument("--workdir", metavar="DIR", help="run each program here ({} strings apply)")
    add_run_options(exe)
    add_config_options(exe)
    exe.add_argument("--debug", action="store_true", help="show tracebacks of errors")

    config = commands.add_parser(
        "config", help="show the effective settings", epilog=CONFIG_EXAMPLES, formatter_class=raw
    )
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = config_commands.add_parser(
        "show", help="each setting, its value and where it came from",
        epilog=CONFIG_EXAMPLES, formatter_class=raw,
    )  # fmt: skip
    add_config_options(show)
    show.add_argument("--debug", action="store_true", help="show tracebacks of errors")

    status = commands.add_parser(
        "status", help="what a run's journal says so far", epilog=STATUS_EXAMPLES,
        formatter_class=raw,
    )  # fmt: skip
    status.add_argument("journal", metavar="JOURNAL", help="the journal file of a run")
    status.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    report = commands.add_parser(
        "report", help="the summary of a journaled run", epilog=STATUS_EXAMPLES,
        formatter_class=raw,
    )  # fmt: skip
    report.add_argument("journal", metavar="JOURNAL", help="the journal file of a run")
    report.add_argument("--out", metavar="FILE", help="results: .jsonl, .csv or .parquet")
    report.add_argument("--html", metavar="FILE", help="an HTML report")
    report.add_argument("--trace", metavar="FILE", help="a trace of the run")
    report.add_argument("--errors", metavar="DIR", help="an error report per failure")
    report.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    retry = commands.add_parser(
        "retry", help="run a journaled command's failed and unfinished tasks again",
        epilog=STATUS_EXAMPLES, formatter_class=raw,
    )  # fmt: skip
    retry.add_argument("journal", metavar="JOURNAL", help="the journal of a corral run/exec")
    retry.add_argument("--workers", metavar="N", help="worker processes (default: as recorded)")
    retry.add_argument("--out", metavar="FILE", help="results: .jsonl, .csv or .parquet")
    retry.add_argument("--debug", action="store_true", help="show tracebacks of errors")

    demo = commands.add_parser(
        "demo", help="run a demo batch with progress and a summary", formatter_class=raw,
        epilog="examples:\n  corral demo\n  corral demo --workers 2\n",
    )  # fmt: skip
    demo.add_argument("--workers", default="auto", help="worker processes (default: auto)")
    demo.add_argument(
        "--out", default=".", help="where report.html and trace.json go (default: here)"
    )
    commands.add_parser(
        "info", help="what corral sees on this machine", formatter_class=raw,
        epilog="examples:\n  corral info    # CPUs (cgroup aware), start methods\n",
    )  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)  # a usage error exits 2 here, with the usage line
    args.argv = argv  # what a journaled run records, for `corral retry`
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        print("corral: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ConfigError as exc:
        _say(exc, args)
        return EXIT_USAGE
    except Exception as exc:
        _say(exc, args, kind=True)
        return EXIT_FAILED


def _say(exc: BaseException, args: argparse.Namespace, kind: bool = False) -> None:
    if getattr(args, "debug", False):
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    what = f"{type(exc).__name__}: {exc}" if kind else str(exc)
    hint = "" if getattr(args, "debug", False) or not kind else " (--debug shows the traceback)"
    print(f"corral: error: {what}{hint}", file=sys.stderr)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        from .commands import run_command

        return run_command(args)
    if args.command == "exec":
        from .commands import exec_command

        return exec_command(args)
    if args.command == "retry":  # the command the journal recorded, again
        from .journal import retry_args

        return _dispatch(retry_args(args, build_parser()))
    if args.command in ("status", "report"):
        from .journal import report_command, status_command

        return (status_command if args.command == "status" else report_command)(args)
    if args.command == "config":
        from .options import config_file, settings_from

        settings = settings_from(args)
        print(f"# settings file: {config_file(args) or 'none'}")
        print(settings.explain())
        return EXIT_OK
    if args.command == "demo":
        from .._demo import demo as run_demo

        workers = args.workers if args.workers == "auto" else int(args.workers)
        report = run_demo(workers, args.out)
        expected = {"ok": 298, "failed": 1, "timeout": 1}
        got = {s.value: n for s, n in report.counts().items() if n}
        return EXIT_OK if got == expected else EXIT_FAILED
    if args.command == "info":
        return _info()
    return EXIT_USAGE  # pragma: no cover - argparse rejects unknown commands


def _info() -> int:
    import multiprocessing
    import platform

    from .. import __version__
    from .._platform import cpu_count, default_start_method

    print(f"corral {__version__} on Python {platform.python_version()} ({sys.platform})")
    print(f"usable CPUs (affinity and cgroup aware): {cpu_count()}")
    print(f"default start method: {default_start_method()}")
    print(f"available start methods: {', '.join(multiprocessing.get_all_start_methods())}")
    return EXIT_OK
