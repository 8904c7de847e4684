"""The options ``corral run`` and ``corral exec`` share, and turning them into settings.

Every run option given on the command line is one layer of ``corral.Settings`` (the
``argument`` layer, above ``CORRAL_*`` variables and the configuration file), written as text
and checked like the file's values, so ``--timeout -1`` and ``timeout: -1`` fail the same way.
Per-task needs (``--lock-by-input``, ``--uses``, ``--memory``) are checked by ``corral.Task``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .._config.settings import Settings
from .._errors import ConfigError

# option dest -> (settings key, how it is written on the command line)
SETTING_OPTIONS = {
    "workers": ("workers", "--workers"),
    "timeout": ("timeout", "--timeout"),
    "retries": ("retries", "--retries"),
    "journal": ("journal", "--journal"),
    "error_dir": ("error_dir", "--error-dir"),
    "backend": ("backend", "--backend"),
    "trace": ("trace", "--trace"),
    "html": ("html", "--html"),
}


def add_config_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("configuration")
    group.add_argument(
        "--config",
        metavar="FILE",
        help="settings file (YAML or TOML); default: the nearest corral.yaml, corral.toml "
        "or pyproject.toml [tool.corral] from here up",
    )
    group.add_argument(
        "--section",
        metavar="KEY",
        help="read the settings at this key of the file (e.g. parallel_processing)",
    )
    group.add_argument("--no-config", action="store_true", help="read no settings file")


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The supervision options of ``run`` and ``exec``."""
    group = parser.add_argument_group("supervision")
    group.add_argument("--workers", metavar="N", help="worker processes, or 'auto' (usable CPUs)")
    group.add_argument("--timeout", metavar="SECONDS", help="per-task time limit")
    group.add_argument("--retries", metavar="N", help="retries after a failure")
    group.add_argument("--backend", metavar="NAME", help="'process' (default) or 'serial'")
    group.add_argument("--journal", metavar="FILE", help="record outcomes; resume from it")
    group.add_argument("--error-dir", metavar="DIR", help="write an error report per failure")
    group.add_argument(
        "--capture-output", action="store_true", default=None, help="keep each task's output"
    )
    group.add_argument(
        "--no-progress", action="store_true", default=None, help="no live progress display"
    )
    group.add_argument("--trace", metavar="FILE", help="write a trace of the run")
    group.add_argument("--html", metavar="FILE", help="write an HTML report of the run")
    group.add_argument(
        "--resource",
        metavar="NAME=N",
        action="append",
        default=[],
        help="capacity of a counted resource (repeatable): --resource orcaflex=4",
    )
    needs = parser.add_argument_group("per-task needs")
    needs.add_argument(
        "--lock-by-input",
        action="store_true",
        help="each input is a lock: no two tasks of the same input at once",
    )
    needs.add_argument(
        "--uses",
        metavar="NAME=N",
        action="append",
        default=[],
        help="what each task uses of a counted resource (repeatable): --uses orcaflex=1",
    )
    needs.add_argument("--memory", metavar="SIZE", help="each task's peak memory, e.g. 2GiB")
    needs.add_argument("--out", metavar="FILE", help="results: .jsonl, .csv or .parquet")


def settings_from(args: argparse.Namespace) -> Settings:
    """The effective settings: these arguments > CORRAL_* > the file > defaults."""
    given: dict[str, Any] = {}
    names: dict[str, str] = {}
    for dest, (key, flag) in SETTING_OPTIONS.items():
        value = getattr(args, dest, None)
        if value is not None:
            given[key] = value
            names[key] = flag
    if getattr(args, "capture_output", None):
        given["capture_output"] = "true"
        names["capture_output"] = "--capture-output"
    if getattr(args, "no_progress", None):
        given["progress"] = "false"
        names["progress"] = "--no-progress"
    resources = getattr(args, "resource", None)
    if resources:
        given["resources"] = ",".join(resources)
        names["resources"] = "--resource"
    return Settings.resolve(config_of(args), given, argument_names=names)


def config_of(args: argparse.Namespace) -> Any:
    if args.no_config:
        if args.config or args.section:
            raise ConfigError("--no-config cannot go with --config or --section")
        return None
    if args.section and not args.config:
        raise ConfigError("--section needs --config FILE")
    if args.config:
        return (args.config, args.section) if args.section else Path(args.config)
    return "auto"


def amounts(pairs: list[str], flag: str) -> dict[str, float]:
    """``["orcaflex=1", "gpu=0.5"]`` -> ``{"orcaflex": 1.0, "gpu": 0.5}``."""
    out: dict[str, float] = {}
    for pair in pairs:
        name, eq, amount = pair.partition("=")
        try:
            number = float(amount)
        except ValueError:
            number = float("nan")
        if not eq or not name.strip() or not number > 0 or number == float("inf"):
            raise ConfigError(f"argument {flag}: expected NAME=N with N > 0, not {pair!r}")
        out[name.strip()] = number
    return out


def config_file(args: argparse.Namespace) -> str | None:
    """The settings file these arguments read, if any (for ``corral config show``)."""
    from .._config.sources import discover

    config = config_of(args)
    if config == "auto":
        found = discover()
        return str(found) if found is not None else None
    if isinstance(config, tuple):
        return f"{config[0]} (section {config[1]})"
    return None if config is None else str(config)
