"""Settings from files, CORRAL_* variables and arguments, through the real command line:
the team's block as it is, precedence, and every validation error at its file, key and line."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

import corral
from tests._procs import corral_cli

SEED = textwrap.dedent(
    """\
    analysis:
      input_dir: data/
    parallel_processing:
      enabled: false          # false -> serial backend, same results
      max_workers: auto      # or a number; "auto" = usable CPUs (cgroup-aware)
      timeout_per_file: 3600 # seconds -> timeout
      save_error_reports: true   # -> error_dir (default "errors/" beside the config file)
      progress_reporting: true   # -> progress
    """
)

WHERE = textwrap.dedent(
    """\
    import os
    def where(path):
        return os.getpid()
    """
)


def _lines(out: str) -> dict[str, tuple[str, str]]:
    rows = {}
    for line in out.splitlines()[1:]:
        key, value, source = ([*line.split(None, 2), "", ""])[:3]
        rows[key] = (value, source)
    return rows


def test_seed_block_as_is_runs_serially_in_the_cli_process(tmp_path: Path) -> None:
    (tmp_path / "analysis.yml").write_text(SEED)
    (tmp_path / "where.py").write_text(WHERE)
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.dat").write_text(name)
    proc = corral_cli(
        "run", "where:where", "*.dat", "--config", "analysis.yml",
        "--section", "parallel_processing", "--out", "out.jsonl", "--no-progress",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    import json

    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == ["a.dat", "b.dat", "c.dat"]
    assert len({r["value"] for r in rows}) == 1  # one process: the CLI's own (serial)
    assert "Traceback" not in proc.stderr


def test_seed_block_mapped_onto_corral_keys(tmp_path: Path) -> None:
    (tmp_path / "analysis.yml").write_text(SEED)
    settings = corral.Settings.load(tmp_path / "analysis.yml", section="parallel_processing")
    assert settings.backend == "serial"
    assert settings.timeout == 3600
    assert settings.progress is True
    assert settings.error_dir == str(tmp_path.resolve() / "errors")
    assert settings.sources["timeout"].line == 6
    assert settings.sources["timeout"].key == "parallel_processing.timeout_per_file"


def test_config_show_names_where_each_setting_came_from(tmp_path: Path) -> None:
    (tmp_path / "corral.yaml").write_text("timeout: 30\nretries: 2\nworkers: 3\n")
    sub = tmp_path / "deep" / "er"
    sub.mkdir(parents=True)
    proc = corral_cli("config", "show", cwd=sub, env={"CORRAL_RETRIES": "5"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == f"# settings file: {tmp_path.resolve() / 'corral.yaml'}"
    rows = _lines(proc.stdout)
    assert rows["timeout"][0] == "30.0" and "corral.yaml:1" in rows["timeout"][1]
    assert rows["retries"] == ("5", "environment variable CORRAL_RETRIES")
    assert rows["errors"] == ("raise", "default")


def test_precedence_arguments_over_environment_over_file_over_defaults(tmp_path: Path) -> None:
    (tmp_path / "corral.toml").write_text("timeout = 30\nretries = 2\nbackoff = 0.5\n")
    settings = corral.Settings.resolve(
        "auto", {"timeout": "7"}, environ={"CORRAL_TIMEOUT": "9", "CORRAL_RETRIES": "4"},
        start=tmp_path,
    )  # fmt: skip
    assert (settings.timeout, settings.retries, settings.backoff) == (7, 4, 0.5)
    assert settings.errors is None  # not set: corral's default applies
    assert [s.kind for s in map(settings.sources.get, ("timeout", "retries", "backoff"))] == [
        "argument", "env", "file",
    ]  # fmt: skip


def test_pyproject_tool_corral_found_from_a_subdirectory(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname='x'\n\n[tool.corral]\nretries = 3\n")
    sub = tmp_path / "src"
    sub.mkdir()
    proc = corral_cli("config", "show", cwd=sub)
    assert proc.returncode == 0, proc.stderr
    assert "pyproject.toml:5 (tool.corral.retries)" in proc.stdout


def test_api_config_argument_and_explicit_arguments_win(tmp_path: Path) -> None:
    (tmp_path / "analysis.yml").write_text(SEED)
    config = (str(tmp_path / "analysis.yml"), "parallel_processing")
    assert corral.map(abs, [-1, -2], config=config, timeout=5) == [1, 2]
    with corral.Pool(config=config) as pool:
        assert pool.backend == "serial"
        assert pool.run_options.timeout == 3600
        # save_error_reports: true -> error reports beside the config file
        assert os.fspath(pool.run_options.error_dir) == os.fspath(tmp_path / "errors")


@pytest.mark.parametrize(
    ("name", "text", "where", "says"),
    [
        ("corral.yaml", "workers: 2\ntimout: 3\n", "corral.yaml, line 2, key timout",
         "did you mean `timeout`"),
        ("corral.yaml", "retries: -1\n", "corral.yaml, line 1, key retries", "non-negative"),
        ("corral.yaml", "timeout: soon\n", "corral.yaml, line 1, key timeout", "'soon'"),
        ("corral.yaml", "resources:\n  gpu: 1\n  orcaflex: -4\n",
         "corral.yaml, line 3, key resources.orcaflex", "positive"),
        ("corral.yaml", "backend: serial\nworkers: 4\n", "corral.yaml, line 2, key workers",
         "'serial'"),
        ("corral.yaml", "parallel_processing:\n  max_workers: -2\n",
         "corral.yaml, line 2, key parallel_processing.max_workers", "positive integer"),
        ("corral.yaml", "timeout: 3\nparallel_processing:\n  timeout_per_file: 5\n",
         "corral.yaml, line 3, key parallel_processing.timeout_per_file", "give one of them"),
        ("corral.yaml", "memory_budget: lots\n", "corral.yaml, line 1, key memory_budget", "size"),
        ("corral.yaml", "backend: dask2\n", "corral.yaml, line 1, key backend", "known:"),
        ("corral.yaml", "retry_on: [OSError, 'not a name']\n",
         "corral.yaml, line 1, key retry_on.1", "exception names"),
        ("corral.yaml", "retries: 1\nretries: 2\n", "corral.yaml, line 2, key retries", "twice"),
        ("corral.yaml", "timeout: [1\n", "corral.yaml, line 2", "invalid YAML"),
        ("corral.toml", "workers = 2\n\n[parallel_processing]\nenabled = 'no'\n",
         "corral.toml, line 4, key parallel_processing.enabled", "true or false"),
        ("corral.toml", "kill_grace = -1\n", "corral.toml, line 1, key kill_grace", "non-negative"),
        ("corral.toml", "timeout = \n", "corral.toml", "invalid TOML"),
    ],
)  # fmt: skip
def test_validation_error_names_file_key_and_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    text: str,
    where: str,
    says: str,
) -> None:
    # In-process, through the CLI's own main (one subprocess per case would cost seconds
    # each on a loaded machine; test_validation_error_from_the_console_script does one).
    from corral._cli import main

    (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("CORRAL_")]:
        monkeypatch.delenv(key)
    assert main(["config", "show"]) == 2
    err = capsys.readouterr().err
    assert where in err and says in err, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) <= 3


def test_validation_error_from_the_console_script(tmp_path: Path) -> None:
    (tmp_path / "analysis.yml").write_text(SEED.replace("3600", "-3600"))
    proc = corral_cli(
        "run", "os.path:basename", "x", "--config", "analysis.yml", "--section",
        "parallel_processing", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.startswith(
        "corral: error: analysis.yml, line 6, key parallel_processing.timeout_per_file: "
        "must be a positive number of seconds"
    ), proc.stderr


def test_bad_environment_variable_and_argument_are_named(tmp_path: Path) -> None:
    proc = corral_cli(
        "run", "os:getcwd", "x", "--retries", "many", cwd=tmp_path, env={"CORRAL_TIMEOUT": "-3"}
    )
    assert proc.returncode == 2
    assert "environment variable CORRAL_TIMEOUT" in proc.stderr
    assert "argument --retries" in proc.stderr


def test_precedence_through_the_console_script(tmp_path: Path) -> None:
    """file (serial) < CORRAL_BACKEND (process) < --backend (serial): where the task ran
    says which won (a worker process carries CORRAL_WORKER in its environment)."""
    (tmp_path / "corral.yaml").write_text("backend: serial\n")
    (tmp_path / "probe.py").write_text(
        "import os\ndef in_worker(x):\n    return 'CORRAL_WORKER' in os.environ\n"
    )

    def ran_in_worker(*args: str, env: dict[str, str] | None = None) -> bool:
        proc = corral_cli("run", "probe:in_worker", "x", "--out", "-", *args, cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr
        import json

        value: bool = json.loads(proc.stdout)["value"]
        return value

    assert ran_in_worker() is False
    assert ran_in_worker(env={"CORRAL_BACKEND": "process"}) is True
    assert ran_in_worker("--backend", "serial", env={"CORRAL_BACKEND": "process"}) is False
