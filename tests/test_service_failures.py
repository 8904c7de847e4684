"""Services that cannot start: fail fast when another port will not help, name the script,
keep the reason visible, and never write the token to the log."""

from __future__ import annotations

import sys

import pytest

import corral
from corral._services.arguments import program_name

pytestmark = pytest.mark.timeout(180)

USAGE_SERVER = """\
import argparse, sys
with open(sys.argv[1], "a") as starts:
    starts.write("start\\n")
parser = argparse.ArgumentParser()
parser.add_argument("starts")
parser.add_argument("--port", required=True)
parser.parse_args()
"""


@pytest.fixture
def usage_server(tmp_path):
    """A server that exits 2 with argparse's usage error; each start adds a line to a file."""
    script = tmp_path / "usage_server.py"
    script.write_text(USAGE_SERVER)
    starts = tmp_path / "starts"
    return [sys.executable, str(script), str(starts)], starts


def count(starts):
    return len(starts.read_text().splitlines()) if starts.exists() else 0


def test_a_usage_error_fails_after_two_ports_not_six(usage_server):
    argv, starts = usage_server
    with pytest.raises(corral.ServiceError) as info:
        corral.Service(argv, retries=5).start()
    error = info.value
    assert error.permanent
    assert len(error.attempts) == 2 and count(starts) == 2
    first_line = str(error).splitlines()[0]
    assert first_line.startswith("usage_server.py cannot start")  # the script, not python
    assert "the following arguments are required: --port" in first_line
    assert "python" not in first_line.split(":")[0]


def test_a_missing_script_fails_fast_and_is_named():
    with pytest.raises(corral.ServiceError) as info:
        corral.Service([sys.executable, "/nonexistent/dir/simserver.py", "--port={port}"]).start()
    assert info.value.permanent and len(info.value.attempts) == 2
    assert str(info.value).startswith("simserver.py cannot start")
    assert "No such file or directory" in str(info.value).splitlines()[0]


def test_a_missing_program_is_permanent():
    with pytest.raises(corral.ServiceError, match="cannot run") as info:
        corral.Service(["/nonexistent/program", "{port}"]).start()
    assert info.value.permanent


def test_a_failure_that_names_the_port_is_still_retried_on_other_ports():
    argv = ["sh", "-c", "echo address 127.0.0.1:{port} already in use >&2; exit 1"]
    with pytest.raises(corral.ServiceError) as info:
        corral.Service(argv, retries=3).start()
    assert not info.value.permanent and len(info.value.attempts) == 4


def test_a_failure_that_differs_only_by_the_token_is_permanent():
    argv = ["sh", "-c", "echo bad token {token}; exit 2"]
    with pytest.raises(corral.ServiceError) as info:
        corral.Service(argv, retries=5).start()
    assert info.value.permanent and len(info.value.attempts) == 2
    assert "bad token <token>" in info.value.output


def test_the_log_never_records_the_token(tmp_path):
    log = tmp_path / "service.log"
    argv = ["sh", "-c", "echo hello {token}; echo x >&2; sleep 1000", "--", "-z={token}"]
    with corral.Service(argv, ready="hello", port=None, log=log) as service:
        token = service.token
        assert f"hello {token}" in service.output  # the live output is the program's own
    text = log.read_text()
    assert token not in text
    assert "hello <token>" in text and "-z=<token>" in text


def test_the_log_of_failed_attempts_never_records_their_tokens(tmp_path):
    log = tmp_path / "service.log"
    argv = ["sh", "-c", "echo token {token} on {port}; exit 1"]
    with pytest.raises(corral.ServiceError):
        corral.Service(argv, retries=2, log=log).start()
    text = log.read_text()
    assert text.count("\ntoken <token> on") == 3  # each attempt's output line
    assert not any(len(word) == 32 and word.isalnum() for word in text.split())


def usage_fixture(argv):
    @corral.fixture
    def server():
        with corral.Service(argv, retries=5) as service:
            yield service

    return server


def uses_server(i, *, server):
    return i


def test_a_permanent_failure_is_not_started_again_for_each_task(usage_server):
    argv, starts = usage_server
    report = corral.run([corral.Task(uses_server, (i,)) for i in range(6)], workers=1,
                        errors="return", fixtures=[usage_fixture(argv)])  # fmt: skip
    assert count(starts) == 2  # one set-up, two ports; then no task starts it again
    for outcome in report.outcomes:
        assert isinstance(outcome.error, corral.FixtureError)
        assert "the following arguments are required: --port" in str(outcome.error)
    first = report.outcomes[0].error
    assert isinstance(first.cause, corral.ServiceError) and first.cause.permanent


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (["python", "simserver.py", "--port", "1"], "simserver.py"),
        (["/usr/bin/python3.11", "-u", "-X", "dev", "/a/b/server.py"], "server.py"),
        ([sys.executable, "-m", "http.server", "{port}"], "http.server"),
        (["python3", "-c", "print(1)"], "python3 -c"),
        (["redis-server", "--port", "{port}"], "redis-server"),
        (["env", "A=1", "timeout", "30", "node", "app.js"], "app.js"),
        (["sh", "-c", "exec x"], "sh -c"),
        (["python"], "python"),
    ],
)
def test_messages_name_the_script_not_the_interpreter(argv, name):
    assert program_name(argv) == name
