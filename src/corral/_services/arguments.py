"""A Service's arguments, checked at the boundary (before anything starts), and the words its
messages use: the program's name (what an interpreter runs, not the interpreter) and the text
of a failed start. Pure functions, no state: ``service`` calls them."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._errors import ConfigError


def substitute(text: str, subst: dict[str, str]) -> str:
    for key, value in subst.items():
        text = text.replace(key, value)
    return text


INTERPRETER = re.compile(
    r"(python|pypy|jython|ipython)[\d.]*(\.exe)?|(ba|da|z|k)?sh|node|perl|ruby|Rscript|julia|"
    r"java|env|uv|uvx|exec|nice|nohup|stdbuf|timeout|taskset|numactl|mpirun|mpiexec|srun"
)
"""Programs that run another one: messages name what they run."""


def program_name(argv: Sequence[str]) -> str:
    """The name messages give a program: for ``python simserver.py`` it is ``simserver.py``,
    for ``python -m http.server`` ``http.server``, for ``redis-server ...`` ``redis-server``."""
    first = Path(argv[0]).name
    if not INTERPRETER.fullmatch(first):
        return first
    args = iter(argv[1:])
    for arg in args:
        if arg in ("-m", "-c", "-e", "-jar"):
            value = next(args, "")
            return value if arg in ("-m", "-jar") and value else f"{first} {arg}"
        if arg in ("-X", "-W", "-cp", "-classpath"):
            next(args, None)  # an option's value
            continue
        if arg.startswith("-") or "=" in arg or arg.replace(".", "").isdigit():
            continue  # an option (or env's VAR=value, timeout's seconds): not the program
        return program_name([arg, *args])
    return first


def failure_message(name: str, failures: list[str], tail: list[str], permanent: bool) -> str:
    """The first line says why (summaries keep only it); then each attempt and the output."""
    last = next((line.strip() for line in reversed(tail) if line.strip()), "")
    if permanent:
        head = f"{name} cannot start (it exited the same way twice in a row)"
    else:
        head = f"{name} did not start after {len(failures)} attempts"
    lines = [f"{head}: {last}" if last else f"{head} (it printed nothing)"]
    lines += [f"  {f}" for f in failures]
    if tail:
        lines.append("its last output lines:")
        lines += [f"  | {line}" for line in tail[-20:]]
    return "\n".join(lines)


def check_ready(ready: Any, port: Any) -> Any:
    if ready == "tcp":
        if port is None:
            raise ConfigError('ready="tcp" needs a port (port="auto" or a number)')
        return "tcp"
    if isinstance(ready, str):
        try:
            return re.compile(ready)
        except re.error as exc:
            raise ConfigError(f"ready is not a valid regular expression: {exc}") from exc
    if isinstance(ready, re.Pattern) or callable(ready):
        return ready
    raise ConfigError(f'ready must be "tcp", a regular expression or a callable, not {ready!r}')


def check_port(port: Any) -> int | None:
    """The first candidate port: None for "auto" (the OS chooses) or for no port at all."""
    if port == "auto" or port is None:
        return None
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f'port must be "auto", None or a port number, not {port!r}')
    return port


def check_number(name: str, value: Any, *, allow_zero: bool = False) -> None:
    bad = isinstance(value, bool) or not isinstance(value, (int, float))
    if bad or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name} must be a positive number of seconds, not {value!r}")
