"""``callboard submit`` against a real ``callboard run`` daemon: output and exit codes."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping

import pytest
from system_support import Daemon, run_cli

from orchestrator.cli import (
    EXIT_AGENT_ERROR,
    EXIT_CONNECTION,
    EXIT_NO_AGENT,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
)

pytestmark = pytest.mark.system

SUBMIT_TIMEOUT = 20.0
"""Seconds a ``submit`` process may run before the test gives up on it."""


def submit(
    callboard_cmd: list[str],
    env: Mapping[str, str],
    *args: str,
    stdin: str | None = None,
    timeout: float = SUBMIT_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run ``callboard submit ARGS`` to completion (killed if it outlives ``timeout``)."""
    return run_cli(callboard_cmd, env, ["submit", *args], stdin=stdin, timeout=timeout)


def test_math_result_is_printed_as_compact_json(
    daemon: Daemon, prefix: str, cli_env: dict[str, str], callboard_cmd: list[str]
) -> None:
    result = submit(callboard_cmd, cli_env, "--prefix", prefix, "math", '{"expression": "6*7"}')
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stdout == '{"value":42}\n'


def test_verbose_names_the_agent_that_answered(
    daemon: Daemon, prefix: str, cli_env: dict[str, str], callboard_cmd: list[str]
) -> None:
    math_id = daemon.agent_ids[0]
    result = submit(
        callboard_cmd,
        cli_env,
        "--prefix",
        prefix,
        "-v",
        "--task-id",
        "system-test-task-1",
        "math",
        '{"expression": "2**10"}',
    )
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stdout == '{"value":1024}\n'
    assert f"task system-test-task-1 answered by {math_id}" in result.stderr


def test_payload_from_stdin(
    daemon: Daemon, prefix: str, cli_env: dict[str, str], callboard_cmd: list[str]
) -> None:
    result = submit(
        callboard_cmd,
        cli_env,
        "--prefix",
        prefix,
        "echo",
        "-",
        stdin='{"from": "stdin", "n": [1, 2, 3]}\n',
    )
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stdout == '{"from":"stdin","n":[1,2,3]}\n'


def test_bad_expression_is_an_agent_error_with_its_code(
    daemon: Daemon, prefix: str, cli_env: dict[str, str], callboard_cmd: list[str]
) -> None:
    result = submit(callboard_cmd, cli_env, "--prefix", prefix, "math", '{"expression": "2+"}')
    assert result.returncode == EXIT_AGENT_ERROR
    assert result.stdout == ""
    assert "error 400" in result.stderr
    assert "invalid syntax" in result.stderr
    assert daemon.agent_ids[0] in result.stderr


def test_payload_that_is_not_json_is_a_usage_error(
    prefix: str, cli_env: dict[str, str], callboard_cmd: list[str]
) -> None:
    result = submit(callboard_cmd, cli_env, "--prefix", prefix, "math", "{expression: 6*7}")
    assert result.returncode == EXIT_USAGE
    assert result.stdout == ""
    assert "the payload is not valid JSON" in result.stderr


def test_capability_nobody_serves_fails_at_once(
    daemon: Daemon, prefix: str, cli_env: dict[str, str], callboard_cmd: list[str]
) -> None:
    # --timeout 120 but the process may take only 15s: "no responders" must not
    # wait for the task timeout.
    result = submit(
        callboard_cmd,
        cli_env,
        "--prefix",
        prefix,
        "--timeout",
        "120",
        "translate",
        '{"text": "hello"}',
        timeout=15.0,
    )
    assert result.returncode == EXIT_NO_AGENT
    assert result.stdout == ""
    assert "no agent serves capability 'translate'" in result.stderr
    assert f"{prefix}.task.translate" in result.stderr


def test_slow_agent_is_a_timeout(
    daemon: Daemon, prefix: str, cli_env: dict[str, str], callboard_cmd: list[str]
) -> None:
    result = submit(
        callboard_cmd,
        cli_env,
        "--prefix",
        prefix,
        "--timeout",
        "0.5",
        "echo",
        '{"delay_ms": 5000}',
    )
    assert result.returncode == EXIT_TIMEOUT
    assert result.stdout == ""
    assert "got no reply within 0.5s" in result.stderr


def test_unreachable_server_exits_5_and_says_what_to_do(
    cli_env: dict[str, str], callboard_cmd: list[str]
) -> None:
    result = submit(
        callboard_cmd,
        cli_env,
        "-s",
        "nats://127.0.0.1:1",
        "math",
        '{"expression": "6*7"}',
        timeout=10.0,
    )
    assert result.returncode == EXIT_CONNECTION
    assert result.stdout == ""
    assert "could not connect to NATS at nats://127.0.0.1:1" in result.stderr
    assert "callboard server" in result.stderr
    assert "NATS_URL" in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "Coordinate a network of AI agents over NATS"),
        (["server"], "--port"),
        (["run"], "config"),
        (["submit"], "--timeout"),
        (["monitor"], "--count"),
        (["demo"], "start a server and agents"),
    ],
    ids=["callboard", "server", "run", "submit", "monitor", "demo"],
)
def test_help_of_every_command(
    args: list[str], expected: str, cli_env: dict[str, str], callboard_cmd: list[str]
) -> None:
    result = run_cli(callboard_cmd, cli_env, [*args, "--help"])
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stdout.startswith("usage: callboard")
    assert expected in result.stdout
    assert result.stderr == ""


def test_payload_above_the_server_limit_is_a_clear_error(
    daemon: Daemon, prefix: str, cli_env: dict[str, str], callboard_cmd: list[str]
) -> None:
    # The session server keeps nats-server's default max_payload of 1 MB.
    big = '{"text": "' + "a" * 2_000_000 + '"}'
    result = submit(callboard_cmd, cli_env, "--prefix", prefix, "echo", "-", stdin=big)
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.startswith("callboard submit: "), result.stderr[-2000:]
    assert "payload" in result.stderr
    # A payload too large is the task's own error (PayloadTooLarge, 413).
    assert result.returncode == EXIT_AGENT_ERROR
    assert result.stdout == ""
