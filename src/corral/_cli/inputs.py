"""What a command runs over, and where its results go.

Inputs: words and globs on the command line (a glob is expanded by corral, sorted, and one
that matches nothing is an error: the shell would pass it on as it is and the task would fail
later), lines of a file (``--inputs list.txt``: blank lines and ``#`` comments skipped), or
rows of a parameter table (``--params sweep.csv|.jsonl|.parquet``, each row a dict of keyword
arguments). Results: one record per task (key, status, value, error) to ``--out``
(``.jsonl``, ``.csv`` or ``.parquet``; ``-`` for JSON lines on standard output).
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._errors import ConfigError
from .._outcome import Outcome

GLOB_CHARS = frozenset("*?[")


def expand_inputs(words: Sequence[str], inputs_file: str | None) -> list[str]:
    """Inputs in order: each word (a glob expanded, sorted), then the lines of ``inputs_file``."""
    out: list[str] = []
    for word in words:
        if GLOB_CHARS & set(word):
            matches = sorted(glob.glob(word, recursive=True))
            if not matches:
                raise ConfigError(f"no file matches {word!r}")
            out.extend(matches)
        else:
            out.append(word)
    if inputs_file is not None:
        try:
            text = Path(inputs_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--inputs {inputs_file}: cannot read: {exc}") from None
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


def read_params(path: str) -> list[dict[str, Any]]:
    """Rows of a parameter table, each a dict of column name to value (CSV cells that read
    as numbers are numbers; empty cells are left out, so the function's default applies)."""
    file = Path(path)
    suffix = file.suffix.lower()
    try:
        if suffix == ".csv":
            rows = _read_csv(file)
        elif suffix in (".jsonl", ".ndjson"):
            rows = _read_jsonl(file)
        elif suffix == ".parquet":
            rows = _read_parquet(file)
        else:
            raise ConfigError(f"--params {path}: expected a .csv, .jsonl or .parquet file")
    except OSError as exc:
        raise ConfigError(f"--params {path}: cannot read: {exc}") from None
    for i, row in enumerate(rows, start=1):
        bad = [k for k in row if not isinstance(k, str) or not k.isidentifier()]
        if bad:
            raise ConfigError(
                f"--params {path}, row {i}: column {bad[0]!r} is not a valid parameter name"
            )
    return rows


def _read_csv(file: Path) -> list[dict[str, Any]]:
    with file.open(newline="", encoding="utf-8") as f:
        try:
            return [
                {k: _cell(v) for k, v in row.items() if v not in ("", None)}
                for row in csv.DictReader(f)
            ]
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ConfigError(f"--params {file}: not a valid CSV file: {exc}") from None


def _cell(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _read_jsonl(file: Path) -> list[dict[str, Any]]:
    rows = []
    with file.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(f"--params {file}, line {number}: not JSON: {exc}") from None
            if not isinstance(row, dict):
                raise ConfigError(f"--params {file}, line {number}: expected a JSON object")
            rows.append(row)
    return rows


def _read_parquet(file: Path) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("reading .parquet needs pyarrow (pip install 'corral[share]')") from None
    try:
        table = pq.read_table(file)
    except Exception as exc:  # pyarrow raises its own kinds for a bad file
        raise ConfigError(f"--params {file}: not a valid parquet file: {exc}") from None
    rows: list[dict[str, Any]] = table.to_pylist()
    return [{k: v for k, v in row.items() if v is not None} for row in rows]


def row_key(row: dict[str, Any]) -> str:
    """A task key that says which row it is: ``a=1,b=x``."""
    return ",".join(f"{k}={v}" for k, v in row.items())


# -- results -------------------------------------------------------------------------------------


def records(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    return [
        {
            "key": str(o.key),
            "status": o.status.value,
            "value": _jsonable(o.value),
            "error": None if o.error is None else f"{type(o.error).__name__}: {o.error}",
        }
        for o in outcomes
    ]


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def check_out(path: str | None) -> None:
    """Refuse a results file we cannot write, before any work starts."""
    if path is None or path == "-":
        return
    if Path(path).suffix.lower() not in (".jsonl", ".csv", ".parquet"):
        raise ConfigError(f"--out {path}: expected a .jsonl, .csv or .parquet file name")
    if not Path(path).resolve().parent.is_dir():
        raise ConfigError(f"--out {path}: directory {Path(path).parent} does not exist")


def write_out(path: str, outcomes: Sequence[Outcome]) -> None:
    rows = records(outcomes)
    if path == "-":
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
        return
    suffix = Path(path).suffix.lower()
    if suffix == ".jsonl":
        with open(path, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    elif suffix == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["key", "status", "value", "error"])
            writer.writeheader()
            for row in rows:
                writer.writerow({**row, "value": json.dumps(row["value"])})
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = {
            "key": [r["key"] for r in rows],
            "status": [r["status"] for r in rows],
            "value": [json.dumps(r["value"]) for r in rows],
            "error": [r["error"] for r in rows],
        }
        pq.write_table(pa.table(columns), path)
