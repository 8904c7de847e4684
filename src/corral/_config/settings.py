"""``corral.Settings``: every run option, from files, the environment and arguments.

Layers, lowest first, each a ``sources.Layer`` of raw values tagged with where they came
from::

    defaults  <  configuration file  <  CORRAL_* environment variables  <  arguments

are merged key by key, then validated once (``validate``: pydantic's ``keys.Model``, then
sizes, names and combinations); every problem is reported at the source of the value that caused it
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

import importlib
import inspect
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .._errors import ConfigError
from .._public import public
from .keys import KEYS, PASS_THROUGH, TEAM_KEYS, Model
from .sources import Layer, Source, discover, read_env, read_file
from .validate import joined, validate, where

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
        self._init(*validate([layer]))

    def _init(self, model: Model, sources: dict[str, Source]) -> None:
        self._model = model
        self.sources: dict[str, Source] = {k: sources[k] for k in model.model_fields_set}

    @classmethod
    def _from_layers(cls, layers: Sequence[Layer]) -> Settings:
        settings = cls.__new__(cls)
        settings._init(*validate(layers))
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
    def options(
        self, api: Callable[..., Any] | None = None, extra: frozenset[str] = frozenset()
    ) -> dict[str, Any]:
        """The keyword options of ``corral.map``/``run``/``Pool`` for what was set:
        ``retry_on`` names imported as exception types, ``fixtures`` references imported.
        An option this corral does not take (its options, the keyword parameters of
        ``api``, and ``extra``: what the caller handles itself, as the command line its
        ``trace`` and ``html``) is a ConfigError naming where it was set."""
        known = api_option_names(api) | extra
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
                    f"corral: {where(source)}: {key!r} is not supported by this version of "
                    "corral; ignored",
                    RuntimeWarning,
                    stacklevel=3,
                )
                continue
            if key not in known:
                problems.append(
                    f"{where(source)}: {key!r} is not supported by this version of corral "
                    "(the feature is not installed); remove it or upgrade corral"
                )
                continue
            try:
                if key == "retry_on":
                    value = tuple(_import_exception(name) for name in value)
                elif key == "fixtures":
                    value = [_import_ref(ref) for ref in value]
            except ConfigError as exc:
                problems.append(f"{where(source)}: {exc}")
                continue
            out[key] = value
        if problems:
            raise ConfigError(joined(problems))
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
