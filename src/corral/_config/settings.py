"""``corral.Settings``: every run option, from files, the environment and arguments.

Layers, lowest first, each a ``sources.Layer`` of raw values tagged with where they came
from::

    defaults  <  configuration file  <  CORRAL_* environment variables  <  arguments

are merged key by key, then validated once by pydantic (``_Model``) and by the checks of
combinations below; every problem is reported at the source of the value that caused it
(file, key path and line; the environment variable; the argument), all problems of one
load together in one ``ConfigError``. A valid ``Settings`` turns into the keyword options of
``corral.map``/``run``/``Pool`` with ``options()``: only the values that were set, so the API's
own defaults stay the defaults.

Options that belong to features another part of corral provides (``journal``, ``error_dir``,
``capture_output``, ``forward_logging``, ``progress_interval``, ``trace``, ``html``) are
carried through by name: if this corral's API does not know one yet, ``options()`` says so in
one clear ``ConfigError`` naming where it was set.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from .._errors import ConfigError
from .._public import public
from .sources import Layer, Source, discover, line_of, read_env, read_file

# -- the keys ----------------------------------------------------------------------------------

PATH_KEYS = ("journal", "error_dir", "trace", "html")
"""Paths; relative ones in a file are relative to that file's directory."""
LIST_KEYS = ("retry_on", "fixtures")
MAP_KEYS = ("resources",)
PASS_THROUGH = (
    "capture_output", "forward_logging", "progress_interval", "journal", "error_dir",
    "trace", "html",
)  # fmt: skip
"""Options of features provided elsewhere in corral, handed to the API by name."""

NULLABLE = frozenset(
    {"timeout", "start_method", "progress", "max_tasks_per_worker", "max_worker_memory",
     "resources", "fixture_failures", *PASS_THROUGH}
)  # fmt: skip
"""Keys whose null means something (no limit, automatic, off); null elsewhere is an error."""

EXPECTED = {
    "workers": "a positive integer or 'auto'",
    "timeout": "a positive number of seconds",
    "retries": "a non-negative integer",
    "retry_on": "a list of exception names (OSError, mypkg.errors.Flaky)",
    "backoff": "a non-negative number of seconds",
    "errors": "'raise' or 'return'",
    "chunksize": "a positive integer or 'auto'",
    "start_method": "'fork', 'forkserver' or 'spawn'",
    "backend": "the name of a backend ('process', 'serial')",
    "progress": "true or false",
    "capture_output": "true or false",
    "forward_logging": "true or false",
    "progress_interval": "a positive number of seconds",
    "max_tasks_per_worker": "a positive integer",
    "max_worker_memory": "a size like 4GiB or a number of bytes",
    "kill_grace": "a non-negative number of seconds",
    "resources": "a mapping of resource name to a positive capacity",
    "memory_budget": "a size like 64GiB, or 'auto'",
    "journal": "a file path",
    "error_dir": "a directory path",
    "trace": "a file path",
    "html": "a file path",
    "fixtures": "a list of module:name references to @corral.fixture functions",
    "fixture_failures": "a positive integer",
    "fixture_teardown_timeout": "a positive number of seconds",
}

TEAM_KEYS = {
    # the team's spelling: (corral key, what it expects)
    "enabled": ("backend", "true or false (false: the serial backend, same results)"),
    "max_workers": ("workers", "a positive integer or 'auto' (usable CPUs)"),
    "timeout_per_file": ("timeout", "a positive number of seconds"),
    "save_error_reports": ("error_dir", "true or false (true: errors/ beside the file)"),
    "progress_reporting": ("progress", "true or false"),
}


class _Model(pydantic.BaseModel):
    """The types and bounds of every setting (None: not set). Strict: a string is not a
    number; environment and command-line text is parsed first (``_from_text``)."""

    model_config = pydantic.ConfigDict(strict=True, extra="forbid", frozen=True)

    workers: PositiveInt | Literal["auto"] | None = None
    timeout: PositiveFloat | None = None
    retries: NonNegativeInt | None = None
    retry_on: list[str] | None = None
    backoff: NonNegativeFloat | None = None
    errors: Literal["raise", "return"] | None = None
    chunksize: PositiveInt | Literal["auto"] | None = None
    start_method: Literal["fork", "forkserver", "spawn"] | None = None
    backend: str | None = None
    progress: bool | None = None
    capture_output: bool | None = None
    forward_logging: bool | None = None
    progress_interval: PositiveFloat | None = None
    max_tasks_per_worker: PositiveInt | None = None
    max_worker_memory: PositiveInt | str | None = None
    kill_grace: NonNegativeFloat | None = None
    resources: dict[str, PositiveFloat] | None = None
    memory_budget: PositiveInt | str | None = None
    journal: str | None = None
    error_dir: str | None = None
    trace: str | None = None
    html: str | None = None
    fixtures: list[str] | None = None
    fixture_failures: PositiveInt | None = None
    fixture_teardown_timeout: PositiveFloat | None = None


KEYS = tuple(_Model.model_fields)
assert set(KEYS) == set(EXPECTED)


# -- the public object ---------------------------------------------------------------------------


@public
class Settings:
    """Run options from a configuration file, ``CORRAL_*`` environment variables and
    arguments, validated, each knowing where it came from.

    Example::

        settings = corral.Settings.load("analysis.yml", section="parallel_processing")
        corral.map(simulate, cases, config=settings)
        corral.map(simulate, cases, config="corral.yaml", retries=2)   # arguments win
        print(settings.explain())                                       # what came from where

    ``Settings(timeout=60, retries=2)`` makes one from Python values. See docs/configuration.md
    for every key, both spellings of the ``parallel_processing`` block, and precedence.
    """

    def __init__(self, **values: Any) -> None:
        layer = Layer(dict(values), {k: Source("settings", "Settings()", k) for k in values})
        self._init(*_validate([layer]))

    def _init(self, model: _Model, sources: dict[str, Source]) -> None:
        self._model = model
        self.sources: dict[str, Source] = {k: sources[k] for k in model.model_fields_set}

    @classmethod
    def _from_layers(cls, layers: Sequence[Layer]) -> Settings:
        settings = cls.__new__(cls)
        settings._init(*_validate(layers))
        return settings

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], section: str | Sequence[str] | None = None
    ) -> Settings:
        """The settings of one file (YAML or TOML), or of its ``section`` (a dotted key path:
        ``"parallel_processing"``, ``"analysis.parallel_processing"``). A ``pyproject.toml``
        is read at ``[tool.corral]``."""
        return cls._from_layers([read_file(path, section)])

    @classmethod
    def resolve(
        cls,
        config: Any = "auto",
        arguments: Mapping[str, Any] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        argument_names: Mapping[str, str] | None = None,
        start: Path | None = None,
    ) -> Settings:
        """Every layer, by precedence: ``arguments`` > ``CORRAL_*`` > the file > defaults.

        ``config``: a path, ``(path, section)``, a ``Settings``, ``"auto"`` (the nearest
        ``corral.yaml``/``corral.toml``/``[tool.corral]`` from ``start`` or the working
        directory up, if any) or None (no file). ``argument_names`` says how each argument is
        called where it was given (``--timeout``), for messages."""
        layers = [config_layer(config, start)]
        layers.append(read_env(KEYS, environ))
        names = argument_names or {}
        args = dict(arguments or {})
        layers.append(
            Layer(args, {k: Source("argument", names.get(k, k), k) for k in args}, base=None)
        )
        return cls._from_layers(layers)

    # -- reading ---------------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in KEYS:
            raise AttributeError(name)
        return getattr(self._model, name)

    def __repr__(self) -> str:
        set_values = ", ".join(
            f"{k}={getattr(self._model, k)!r}" for k in KEYS if k in self.sources
        )
        return f"Settings({set_values})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Settings) and self.values() == other.values()

    __hash__ = None  # type: ignore[assignment]

    def values(self) -> dict[str, Any]:
        """The settings that were set (file, environment, arguments), as validated."""
        return {k: getattr(self._model, k) for k in KEYS if k in self.sources}

    def effective(self) -> list[tuple[str, Any, str]]:
        """Every setting: (name, value, where it came from), defaults included."""
        defaults = api_defaults()
        rows = []
        for key in KEYS:
            if key in self.sources:
                rows.append((key, getattr(self._model, key), str(self.sources[key])))
            else:
                rows.append((key, defaults.get(key), "default"))
        return rows

    def explain(self) -> str:
        """The effective settings as text, one per line, with where each came from."""
        rows = [(k, _show(v), s) for k, v, s in self.effective()]
        width = max(len(k) for k, _, _ in rows)
        vwidth = min(40, max(len(v) for _, v, _ in rows))
        return "\n".join(f"{k:<{width}}  {v:<{vwidth}}  {s}" for k, v, s in rows)

    # -- into the API ----------------------------------------------------------------------
    def options(self, api: Callable[..., Any] | None = None) -> dict[str, Any]:
        """The keyword options of ``corral.map``/``run``/``Pool`` for what was set:
        ``retry_on`` names imported as exception types, ``fixtures`` references imported.
        An option this corral does not take (its options, and the keyword parameters of
        ``api``) is a ConfigError naming where it was set."""
        known = api_option_names(api)
        out: dict[str, Any] = {}
        problems = []
        for key, value in self.values().items():
            source = self.sources[key]
            if value is None and key in PASS_THROUGH:
                continue  # off: nothing to hand on, whatever this corral supports
            if key not in known and source.key.rpartition(".")[2] in TEAM_KEYS:
                # The team's block as it is must run on any corral: a feature it turns on
                # that this one lacks (save_error_reports) is said, not fatal.
                warnings.warn(
                    f"corral: {_where(source)}: {key!r} is not supported by this version of "
                    "corral; ignored",
                    RuntimeWarning,
                    stacklevel=3,
                )
                continue
            if key not in known:
                problems.append(
                    f"{_where(source)}: {key!r} is not supported by this version of corral "
                    "(the feature is not installed); remove it or upgrade corral"
                )
                continue
            try:
                if key == "retry_on":
                    value = tuple(_import_exception(name) for name in value)
                elif key == "fixtures":
                    value = [_import_ref(ref) for ref in value]
            except ConfigError as exc:
                problems.append(f"{_where(source)}: {exc}")
                continue
            out[key] = value
        if problems:
            raise ConfigError(_joined(problems))
        return out


def config_layer(config: Any, start: Path | None = None) -> Layer:
    """The file layer of ``config`` (see ``Settings.resolve``)."""
    if config is None:
        return Layer({}, {})
    if isinstance(config, Settings):
        return Layer(config.values(), dict(config.sources))
    if isinstance(config, str) and config == "auto":
        found = discover(start)
        return read_file(found) if found is not None else Layer({}, {})
    if isinstance(config, tuple) and len(config) == 2:
        return read_file(config[0], config[1])
    if isinstance(config, (str, os.PathLike)):
        return read_file(config)
    raise ConfigError(
        f"config must be a path, (path, section), a corral.Settings, 'auto' or None, not {config!r}"
    )


# -- validation ----------------------------------------------------------------------------------


def _validate(layers: Sequence[Layer]) -> tuple[_Model, dict[str, Source]]:
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
            if key in PATH_KEYS and isinstance(value, os.PathLike):
                value = os.fspath(value)
            if key in PATH_KEYS and isinstance(value, str) and layer.base is not None:
                value = str(layer.base / value) if value else value
            values[key] = value
            sources[key] = source
    try:
        model = _Model(**values)
    except pydantic.ValidationError as exc:
        problems.extend(_describe(exc, values, sources))
    else:
        problems.extend(_check_model(model, sources))
        if not problems:
            return model, sources
    raise ConfigError(_joined(problems))


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
            problems.append(f"{_where(source)}: must be {expected}, not {value!r}")
            continue
        if target in values:
            problems.append(
                f"{_where(source)}: sets {target!r}, which is also set at "
                f"{_where(sources[target])}; give one of them"
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
        where = _where(source, sub)
        said.setdefault(where, f"{where}: must be {EXPECTED[key]}, not {error['input']!r}")
    return list(said.values())


def _check_model(model: _Model, sources: Mapping[str, Source]) -> list[str]:
    """What pydantic's types cannot say: sizes, backend names, references, combinations."""
    from .._backends import BACKENDS
    from .._options import parse_size

    problems = []
    for key in sorted(model.model_fields_set - NULLABLE):
        if getattr(model, key) is None:  # null in a file: a value, and not one allowed here
            problems.append(f"{_where(sources[key])}: must be {EXPECTED[key]}, not null")
    for key in ("max_worker_memory", "memory_budget"):
        value = getattr(model, key)
        if value is None or (key == "memory_budget" and value == "auto"):
            continue
        try:
            parse_size(value, key)
        except ConfigError:
            problems.append(f"{_where(sources[key])}: must be {EXPECTED[key]}, not {value!r}")
    if model.backend is not None and model.backend not in BACKENDS:
        known = ", ".join(sorted(BACKENDS))
        problems.append(
            f"{_where(sources['backend'])}: unknown backend {model.backend!r} (known: {known})"
        )
    for key, pattern in (("retry_on", _is_dotted), ("fixtures", _is_ref)):
        for i, name in enumerate(getattr(model, key) or ()):
            if not pattern(name):
                problems.append(
                    f"{_where(sources[key], [str(i)])}: must be {EXPECTED[key]}, not {name!r}"
                )
    for key in ("resources",):
        for name in model.resources or {}:
            if not name:
                problems.append(f"{_where(sources[key])}: resource names must not be empty")
    serial = model.backend == "serial"
    if serial and isinstance(model.workers, int) and model.workers > 1:
        problems.append(
            f"{_where(sources['workers'])}: workers={model.workers} needs worker processes, "
            f"but the backend is 'serial' (set at {_where(sources['backend'])})"
        )
    if serial and model.start_method is not None:
        problems.append(
            f"{_where(sources['start_method'])}: start_method has no meaning with the "
            f"serial backend (set at {_where(sources['backend'])})"
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
        return f"{_where(source)}: unknown setting{hint}"
    return f"{_where(source)}: unknown setting {key!r}{hint}"


def _where(source: Source, sub: Sequence[str] = ()) -> str:
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


def _joined(problems: Sequence[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} problems in the settings:\n  " + "\n  ".join(problems)


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, tuple):
        value = [getattr(v, "__name__", v) for v in value]
    return str(value)


# -- the API -------------------------------------------------------------------------------------


def api_defaults() -> dict[str, Any]:
    from dataclasses import MISSING, fields

    from .._options import PoolOptions, RunOptions

    out: dict[str, Any] = {}
    for cls in (PoolOptions, RunOptions):
        for f in fields(cls):
            if f.default is not MISSING:
                out[f.name] = f.default
    out["fixtures"] = []
    out["retry_on"] = ("Exception",)
    return out


def api_option_names(api: Callable[..., Any] | None = None) -> frozenset[str]:
    """What the API accepts as keyword options, today: the options' fields, and the named
    keyword-only parameters of ``api`` (the function the options are for), so an option
    that a later corral takes as a parameter (a journal, say) is known without a change
    here."""
    from .._options import POOL_FIELDS, RUN_FIELDS

    params: set[str] = set()
    if api is not None:
        params = {
            name
            for name, p in inspect.signature(api).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and not name.startswith("_")
        }
    return frozenset(POOL_FIELDS | RUN_FIELDS | params)


def _import_ref(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"cannot import module {module!r} of {ref!r}: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{ref!r}: module {module!r} has no {attr!r}") from None
    return obj


def _import_exception(name: str) -> type[BaseException]:
    import builtins

    if "." not in name:
        obj = getattr(builtins, name, None)
    else:
        module, _, attr = name.rpartition(".")
        obj = _import_ref(f"{module}:{attr}")
    if not (isinstance(obj, type) and issubclass(obj, BaseException)):
        raise ConfigError(f"retry_on: {name!r} is not an exception type")
    return obj
