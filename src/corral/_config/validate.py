"""Validation of merged settings layers: the team's keys mapped onto corral's, text read as
YAML, pydantic's types, then what types cannot say (sizes, names, combinations); every
problem reported at the source of the value that caused it, all of them in one ConfigError.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pydantic
import yaml

from .._errors import ConfigError
from .keys import (
    EXPECTED,
    KEYS,
    LIST_KEYS,
    MAP_KEYS,
    NULLABLE,
    PATH_KEYS,
    TEAM_KEYS,
    Model,
)
from .sources import Layer, Source, line_of


def validate(layers: Sequence[Layer]) -> tuple[Model, dict[str, Source]]:
    """Merge ``layers`` (later wins), map the team's keys, and validate; every problem of
    every layer in one ConfigError."""
    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    problems: list[str] = []
    for layer in layers:
        mapped, mapped_sources = _map_team_keys(layer, problems)
        for key, value in mapped.items():
            source = mapped_sources[key]
            if source.kind in ("env", "argument") and isinstance(value, str):
                value = _from_text(key, value)
            if key == "retry_on" and isinstance(value, (list, tuple)):
                value = [exception_name(v) if isinstance(v, type) else v for v in value]
            if key in PATH_KEYS and isinstance(value, os.PathLike):
                value = os.fspath(value)
            if key in PATH_KEYS and isinstance(value, str) and layer.base is not None:
                value = str(layer.base / value) if value else value
            values[key] = value
            sources[key] = source
    try:
        model = Model(**values)
    except pydantic.ValidationError as exc:
        problems.extend(_describe(exc, values, sources))
    else:
        problems.extend(_check_model(model, sources))
        if not problems:
            return model, sources
    raise ConfigError(joined(problems))


def _map_team_keys(layer: Layer, problems: list[str]) -> tuple[dict[str, Any], dict[str, Source]]:
    """The layer with the team's keys (``TEAM_KEYS``) turned into corral's, checked here
    so that a problem names the key as the team wrote it; unknown keys reported with the
    closest valid key."""
    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    team: dict[str, tuple[Any, Source]] = {}
    for key, value in layer.values.items():
        source = layer.sources[key]
        if key in TEAM_KEYS and source.kind == "file":
            team[key] = (value, source)
        elif key in KEYS:
            values[key] = value
            sources[key] = source
        else:
            problems.append(_unknown(key, source))
    for key, (value, source) in team.items():
        target, expected = TEAM_KEYS[key]
        converted = _team_value(key, value, layer.base)
        if converted is _INVALID:
            problems.append(f"{where(source)}: must be {expected}, not {value!r}")
            continue
        if target in values:
            problems.append(
                f"{where(source)}: sets {target!r}, which is also set at "
                f"{where(sources[target])}; give one of them"
            )
            continue
        if converted is _NOTHING:
            continue
        values[target] = converted
        sources[target] = source
    workers = sources.get("workers")
    if team.get("enabled", (True,))[0] is False and workers and workers.key.endswith("max_workers"):
        # The team's switch: off runs in-process and leaves the other keys as they are
        # (max_workers too, so switching back on needs no other edit).
        values.pop("workers")
        sources.pop("workers")
    return values, sources


_INVALID = object()
_NOTHING = object()


def _team_value(key: str, value: Any, base: Path | None) -> Any:
    if key in ("enabled", "save_error_reports", "progress_reporting"):
        if not isinstance(value, bool):
            return _INVALID
        if key == "enabled":
            return _NOTHING if value else "serial"
        if key == "save_error_reports":
            return str((base or Path.cwd()) / "errors") if value else _NOTHING
        return value
    if key == "max_workers":
        if value == "auto" or (type(value) is int and value > 0):
            return value
        return _INVALID
    if key == "timeout_per_file":
        if value is None:
            return _NOTHING
        if type(value) in (int, float) and value > 0:
            return value
        return _INVALID
    raise AssertionError(key)  # pragma: no cover


def _from_text(key: str, text: str) -> Any:
    """A value written as text (an environment variable, a command-line option)."""
    if key in PATH_KEYS or key in ("backend",):
        return text
    if key in LIST_KEYS:
        return [part.strip() for part in text.split(",") if part.strip()]
    if key in MAP_KEYS:
        out: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, eq, amount = part.partition("=")
            out[name.strip()] = _scalar(amount) if eq else amount
        return out
    return _scalar(text)


def _scalar(text: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (bool, int, float, str)) or value is None else text


def _describe(
    exc: pydantic.ValidationError, values: Mapping[str, Any], sources: Mapping[str, Source]
) -> list[str]:
    """One line per wrong setting, at its source, saying what was expected."""
    said: dict[str, str] = {}
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        key = loc[0]
        source = sources.get(key, Source("argument", key, key))
        if error["type"] == "extra_forbidden":  # pragma: no cover - filtered before
            said.setdefault(key, _unknown(key, source))
            continue
        sub = loc[1:] if key in MAP_KEYS or key in LIST_KEYS else []
        at = where(source, sub)
        said.setdefault(at, f"{at}: must be {EXPECTED[key]}, not {error['input']!r}")
    return list(said.values())


def _check_model(model: Model, sources: Mapping[str, Source]) -> list[str]:
    """What pydantic's types cannot say: sizes, backend names, references, combinations."""
    from .._backends import BACKENDS
    from .._options import parse_size

    problems = []
    for key in sorted(model.model_fields_set - NULLABLE):
        if getattr(model, key) is None:  # null in a file: a value, and not one allowed here
            problems.append(f"{where(sources[key])}: must be {EXPECTED[key]}, not null")
    if isinstance(model.timeout, str):  # "3x", "200%": a multiple of the median task
        from .._survival import parse_relative_timeout

        try:
            parse_relative_timeout(model.timeout)
        except ConfigError:
            expected, at = EXPECTED["timeout"], where(sources["timeout"])
            problems.append(f"{at}: must be {expected}, not {model.timeout!r}")
    for key in ("max_worker_memory", "memory_budget", "output_limit", "min_free_memory"):
        value = getattr(model, key)
        if value is None or (key == "memory_budget" and value == "auto"):
            continue
        try:
            parse_size(value, key)
        except ConfigError:
            problems.append(f"{where(sources[key])}: must be {EXPECTED[key]}, not {value!r}")
    if model.backend is not None and model.backend not in BACKENDS:
        known = ", ".join(sorted(BACKENDS))
        problems.append(
            f"{where(sources['backend'])}: unknown backend {model.backend!r} (known: {known})"
        )
    for key, pattern in (("retry_on", _is_dotted), ("fixtures", _is_ref)):
        for i, name in enumerate(getattr(model, key) or ()):
            if not pattern(name):
                problems.append(
                    f"{where(sources[key], [str(i)])}: must be {EXPECTED[key]}, not {name!r}"
                )
    for key in ("resources",):
        for name in model.resources or {}:
            if not name:
                problems.append(f"{where(sources[key])}: resource names must not be empty")
    serial = model.backend == "serial"
    if serial and isinstance(model.workers, int) and model.workers > 1:
        problems.append(
            f"{where(sources['workers'])}: workers={model.workers} needs worker processes, "
            f"but the backend is 'serial' (set at {where(sources['backend'])})"
        )
    if serial and model.start_method is not None:
        problems.append(
            f"{where(sources['start_method'])}: start_method has no meaning with the "
            f"serial backend (set at {where(sources['backend'])})"
        )
    return problems


def _is_dotted(name: str) -> bool:
    return bool(name) and all(part.isidentifier() for part in name.split("."))


def _is_ref(ref: str) -> bool:
    module, colon, attr = ref.partition(":")
    return bool(colon) and _is_dotted(module) and _is_dotted(attr)


def _unknown(key: str, source: Source) -> str:
    candidates = [*KEYS, *TEAM_KEYS] if source.kind == "file" else list(KEYS)
    close = difflib.get_close_matches(str(key), candidates, n=1)
    hint = f" (did you mean `{close[0]}`?)" if close else " (see docs/configuration.md)"
    if source.kind == "env":
        return f"{where(source)}: unknown setting{hint}"
    return f"{where(source)}: unknown setting {key!r}{hint}"


def where(source: Source, sub: Sequence[str] = ()) -> str:
    if source.kind == "file":
        key = ".".join([source.key, *sub])
        line = source.line
        if sub and source.line is not None:
            line = _sub_line(source, tuple(sub)) or line
        at = f", line {line}" if line else ""
        return f"{source.where}{at}, key {key}"
    if source.kind == "env":
        return f"environment variable {source.where}"
    if source.kind == "argument":
        return f"argument {source.where}"
    return f"Settings({source.key}=...)"


_SUB_LINES: dict[tuple[str, str], dict[tuple[str, ...], int]] = {}


def _sub_line(source: Source, sub: tuple[str, ...]) -> int | None:
    """The line of a key inside a setting (``resources.gpu``): re-read from the file, only
    when an error names one."""
    from .sources import _toml_with_lines, _yaml_with_lines

    try:
        text = Path(source.where).read_text(encoding="utf-8")
        reader = _toml_with_lines if source.where.endswith(".toml") else _yaml_with_lines
        _, lines = reader(text, source.where)
    except (OSError, ConfigError, UnicodeDecodeError):
        return None
    return line_of(lines, (*source.key.split("."), *sub))


def joined(problems: Sequence[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} problems in the settings:\n  " + "\n  ".join(problems)


def exception_name(cls: type) -> str:
    """``OSError`` for a builtin, ``package.module.Name`` otherwise (``Settings(retry_on=
    [OSError])`` is written as a file would have it)."""
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"
