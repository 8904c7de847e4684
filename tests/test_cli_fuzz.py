"""Hypothesis fuzzes settings files and argument lists: every invalid input ends in one clear
error line with exit status 2, never a traceback, never a hang; and whatever the settings
accept, corral's own options accept too (nothing invalid slips through to a run).

In-process through the CLI's ``main`` (the console script is ``main`` behind one
``sys.exit``; tests/test_cli_*.py drive it in subprocesses), with few, bounded examples.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import corral
from corral._cli import main
from corral._config.settings import KEYS, TEAM_KEYS

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

names = st.one_of(
    st.sampled_from([*KEYS, *TEAM_KEYS, "parallel_processing"]),
    st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["auto", "serial", "process", "raise", "return", "fork", "2GiB", "-1", ""]),
    st.text(max_size=8),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(names, inner, max_size=3)),
    max_leaves=6,
)
documents = st.dictionaries(names, values, max_size=6)


def _check(code: int, err: str) -> None:
    assert code in (0, 2), err
    assert "Traceback" not in err
    if code == 2:
        assert err.startswith("corral: error:") or "usage:" in err, err


def _run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(args)
    except SystemExit as exit:  # argparse's own usage errors
        code = int(exit.code or 0)
    return code, capsys.readouterr().err


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("CORRAL_")]:
        monkeypatch.delenv(key)


def _toml(doc: dict[str, object]) -> str:
    """Rough TOML: what does not read as TOML is an invalid file, also to be reported."""

    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float) and not math.isfinite(v):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        if isinstance(v, dict):
            return "{" + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + "}"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)

    return "".join(f"{json.dumps(k)} = {value(v)}\n" for k, v in doc.items())


@settings(FUZZ, max_examples=40)
@given(doc=documents, as_toml=st.booleans())
def test_any_settings_file_is_accepted_or_refused_in_one_clear_line(
    doc: dict[str, object], as_toml: bool, capsys: pytest.CaptureFixture[str], clean_env: None
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("corral.toml" if as_toml else "corral.yaml")
        path.write_text(_toml(doc) if as_toml else yaml.safe_dump(doc))
        code, err = _run_main(["config", "show", "--config", str(path)], capsys)
        _check(code, err)
        if code == 0:
            # accepted: then corral's own option checks accept it too
            options = corral.Settings.load(path).options()
            options.pop("retry_on", None)  # dotted names, imported: checked by options()
            from corral._api import _validate

            try:
                _validate(options.pop("workers", "auto"), options)
            except corral.ConfigError as exc:
                assert "not supported by this version" in str(exc)


@FUZZ
@given(text=st.text(max_size=200))
def test_any_text_as_a_settings_file(
    text: str, capsys: pytest.CaptureFixture[str], clean_env: None
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("corral.yaml", "corral.toml"):
            path = Path(tmp) / name
            path.write_text(text)
            _check(*_run_main(["config", "show", "--config", str(path)], capsys))


options = st.sampled_from(
    ["--workers", "--timeout", "--retries", "--backend", "--resource", "--uses", "--memory",
     "--out", "--inputs", "--params", "--config", "--section", "--journal", "--error-dir"]
)  # fmt: skip
words = st.one_of(
    st.sampled_from(["0", "-1", "1", "auto", "nan", "inf", "x=1", "x=-1", "=", "2GiB", "serial",
                     "a.xlsx", "missing.csv", "missing.yaml", "", "--", "{}", "{#}"]),
    st.text(max_size=6),
)  # fmt: skip
argument_lists = st.lists(st.one_of(options, words), max_size=6)


@FUZZ
@given(command=st.sampled_from(["run", "exec"]), extra=argument_lists)
def test_any_argument_list_ends_in_exit_2_with_one_clear_error(
    command: str,
    extra: list[str],
    capsys: pytest.CaptureFixture[str],
    clean_env: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # The inputs match nothing, so nothing can run: every list must end in a usage error.
    monkeypatch.chdir(tmp_path)
    target = "os.path:basename" if command == "run" else "echo {}"
    code, err = _run_main([command, target, "nomatch-*.none", *extra, "--no-progress"], capsys)
    assert code == 2, err
    assert "Traceback" not in err
    assert err.startswith("corral: error:") or "usage:" in err, err
