"""Where settings come from: configuration files (with the line of every key), the
environment, and the arguments, each value tagged with its ``Source``.

A file is read into a ``Layer``: a flat mapping of top-level setting names to their raw
values, each with the ``Source`` that says which file, which key path and which line it came
from. Nothing is validated here beyond the file being a mapping: ``settings`` validates the
merged layers once, and reports a problem at the source of the value that caused it.

Files are found from the working directory up: in each directory, ``corral.yaml``,
``corral.yml``, ``corral.toml``, then ``pyproject.toml`` if it has a ``[tool.corral]`` table;
the first found wins (the nearest directory first).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .._errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

FILE_NAMES = ("corral.yaml", "corral.yml", "corral.toml", "pyproject.toml")
TEAM_BLOCK = "parallel_processing"
"""The block teams already write (see ``settings.TEAM_KEYS``), accepted in place."""


@dataclass(frozen=True)
class Source:
    """Where one value came from: ``kind`` is ``default``, ``file``, ``env``, ``argument``
    or ``settings`` (a ``corral.Settings`` object); ``where`` names the file, the environment
    variable or the argument; ``key`` is the key path as written; ``line`` is 1-based."""

    kind: str
    where: str = ""
    key: str = ""
    line: int | None = None

    def __str__(self) -> str:
        if self.kind == "file":
            line = f":{self.line}" if self.line else ""
            return f"{self.where}{line} ({self.key})"
        if self.kind == "env":
            return f"environment variable {self.where}"
        if self.kind == "argument":
            return f"argument {self.where}" if self.where else "argument"
        return self.kind


@dataclass
class Layer:
    """Raw values of one source, by setting name, with where each came from. ``base`` is the
    directory relative paths in this layer are relative to."""

    values: dict[str, Any]
    sources: dict[str, Source]
    base: Path | None = None


# -- files -------------------------------------------------------------------------------------


def discover(start: Path | None = None) -> Path | None:
    """The nearest configuration file from ``start`` (default: the working directory) up."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        for name in FILE_NAMES:
            path = directory / name
            if not path.is_file():
                continue
            if name == "pyproject.toml" and not _has_tool_corral(path):
                continue
            return path
    return None


def _has_tool_corral(path: Path) -> bool:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    tool = data.get("tool")
    return isinstance(tool, dict) and "corral" in tool


def read_file(path: str | os.PathLike[str], section: str | Sequence[str] | None = None) -> Layer:
    """The settings of file ``path``: its whole content, or the mapping at ``section`` (a
    dotted key path or a sequence of keys); ``[tool.corral]`` for a ``pyproject.toml``.

    A ``parallel_processing`` mapping inside is merged with the keys beside it (both
    spellings are accepted together; a key given twice is an error)."""
    file = Path(path)
    shown = str(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{shown}: configuration file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{shown}: cannot read configuration file: {exc}") from None
    if file.suffix.lower() == ".toml":
        data, lines = _toml_with_lines(text, shown)
    elif file.suffix.lower() in (".yaml", ".yml"):
        data, lines = _yaml_with_lines(text, shown)
    else:
        raise ConfigError(f"{shown}: configuration files are .yaml, .yml or .toml")
    keys: tuple[str, ...] = ()
    if section is not None:
        keys = tuple(section.split(".")) if isinstance(section, str) else tuple(section)
    elif file.name == "pyproject.toml":
        keys = ("tool", "corral")
    for depth, key in enumerate(keys):
        if not isinstance(data, dict) or key not in data:
            where = ".".join(keys[: depth + 1])
            raise ConfigError(f"{shown}: no section {where!r} in this file")
        data = data[key]
    if data is None:
        data = {}
    if not isinstance(data, dict):
        where = f" section {'.'.join(keys)!r}" if keys else ""
        raise ConfigError(
            f"{shown}{_at(lines, keys)}:{where} must be a mapping of settings, "
            f"not {type(data).__name__}"
        )
    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    blocks = [(keys, data)]
    team = data.get(TEAM_BLOCK)
    if isinstance(team, dict) or (TEAM_BLOCK in data and team is None):
        blocks = [(keys, {k: v for k, v in data.items() if k != TEAM_BLOCK})]
        blocks.append(((*keys, TEAM_BLOCK), team or {}))
    for prefix, block in blocks:
        for key, value in block.items():
            path_keys = (*prefix, str(key))
            source = Source("file", shown, ".".join(path_keys), lines.get(path_keys))
            if not isinstance(key, str):
                raise ConfigError(f"{_where(source)}: setting names must be strings, not {key!r}")
            if key in values:
                raise ConfigError(
                    f"{_where(source)}: {key!r} is also set at {_where(sources[key])}; give it once"
                )
            values[key] = value
            sources[key] = source
    return Layer(values, sources, base=file.resolve().parent)


def _where(source: Source) -> str:
    line = f", line {source.line}" if source.line else ""
    return f"{source.where}{line}, key {source.key}"


def _at(lines: Mapping[tuple[str, ...], int], keys: tuple[str, ...]) -> str:
    line = lines.get(keys)
    return f", line {line}" if line else ""


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader: plain data only (no Python objects from a configuration file)."""


def _yaml_with_lines(text: str, shown: str) -> tuple[Any, dict[tuple[str, ...], int]]:
    """The data of a YAML document and the line of every mapping key, by key path; a key
    given twice in one mapping is an error (PyYAML would keep the last silently)."""
    try:
        node = yaml.compose(text, Loader=_UniqueKeyLoader)
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f", line {mark.line + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"{shown}{line}: invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{shown}: invalid YAML: {exc}") from None
    lines: dict[tuple[str, ...], int] = {}

    def walk(n: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(n, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in n.value:
                key = str(key_node.value)
                line = key_node.start_mark.line + 1
                if key in seen:
                    where = ".".join((*path, key))
                    raise ConfigError(
                        f"{shown}, line {line}, key {where}: given twice "
                        f"(first at line {seen[key]})"
                    )
                seen[key] = line
                here = (*path, key)
                lines[here] = line
                walk(value_node, here)
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                here = (*path, str(i))
                lines[here] = item.start_mark.line + 1
                walk(item, here)

    if node is not None:
        walk(node, ())
    return data, lines


_TOML_HEADER = re.compile(r"^\s*\[\[?\s*(?P<name>[^\]]+?)\s*\]\]?\s*(#.*)?$")
_TOML_BARE = r"(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')"
_TOML_KEY = re.compile(rf"^\s*(?P<key>{_TOML_BARE}(?:\s*\.\s*{_TOML_BARE})*)\s*=")
_TOML_PART = re.compile(r"\"([^\"]*)\"|'([^']*)'|([A-Za-z0-9_-]+)")


def _toml_with_lines(text: str, shown: str) -> tuple[Any, dict[tuple[str, ...], int]]:
    """The data of a TOML document and the line of every key. tomllib keeps no positions, so
    the lines are found by reading the tables and keys as they are written (a key inside a
    multi-line string may be misplaced; the key's parent is used then)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{shown}: invalid TOML: {exc}") from None
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, raw in enumerate(text.splitlines(), start=1):
        header = _TOML_HEADER.match(raw)
        if header:
            table = _toml_parts(header.group("name"))
            lines.setdefault(table, number)
            continue
        key = _TOML_KEY.match(raw)
        if key:
            path = (*table, *_toml_parts(key.group("key")))
            lines.setdefault(path, number)
    return data, lines


def _toml_parts(dotted: str) -> tuple[str, ...]:
    return tuple(next(g for g in m.groups() if g is not None) for m in _TOML_PART.finditer(dotted))


def line_of(lines: Mapping[tuple[str, ...], int], path: tuple[str, ...]) -> int | None:
    """The line of ``path``, or of its nearest parent that has one."""
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None


# -- the environment -----------------------------------------------------------------------------

ENV_PREFIX = "CORRAL_"


def read_env(names: Sequence[str], environ: Mapping[str, str] | None = None) -> Layer:
    """``CORRAL_<NAME>`` for each setting name (only those: ``CORRAL_WORKER``,
    ``CORRAL_RUNTIME_DIR`` and the like are corral's own and not settings). Values are
    written as in YAML (``3``, ``true``, ``auto``, ``2GiB``); lists as ``a,b``; mappings as
    ``name=4,other=2``."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    for name in names:
        variable = ENV_PREFIX + name.upper()
        if variable in env:
            values[name] = env[variable]
            sources[name] = Source("env", variable, variable)
    return Layer(values, sources, base=None)
