"""What ``callboard`` says when something is wrong: the real CLI, as a subprocess, against
a real nats-server and a real daemon. Each message names what is wrong (the agent id, the
file, the task id, the setting to turn on), on the stream and with the exit code a script
expects.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Mapping

import pytest
from system_support import Daemon, run_cli

from orchestrator.cli import EXIT_CONNECTION, EXIT_NO_AGENT, EXIT_OK, EXIT_USAGE

pytestmark = pytest.mark.system


def cli(
    callboard_cmd: list[str], env: Mapping[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return run_cli(callboard_cmd, env, args)


def test_submit_to_an_unknown_agent_id_blames_the_id(
    daemon: Daemon, prefix: str, cli_env: dict[str, str], callboard_cmd: list[str]
) -> None:
    result = cli(
        callboard_cmd,
        cli_env,
        "submit",
        "--prefix",
        prefix,
        "--agent",
        "nosuch",
        "math",
        '{"expression": "1"}',
    )
    assert result.returncode == EXIT_NO_AGENT
    assert "no agent has the id 'nosuch'" in result.stderr
    assert "no agent serves capability" not in result.stderr


def test_health_of_a_capability_nobody_serves_says_so_on_stdout(
    daemon: Daemon, prefix: str, cli_env: dict[str, str], callboard_cmd: list[str]
) -> None:
    base = ["health", "--prefix", prefix, "--capability", "nosuch", "--timeout", "500ms"]
    text = cli(callboard_cmd, cli_env, *base)
    assert text.returncode == EXIT_NO_AGENT
    assert text.stdout == f"unhealthy: no agent serves 'nosuch' on prefix '{prefix}'\n"

    as_json = cli(callboard_cmd, cli_env, *base, "--json")
    assert as_json.returncode == EXIT_NO_AGENT
    assert json.loads(as_json.stdout)["status"] == "unhealthy"


def test_health_of_a_daemon_without_metrics_says_they_are_off_by_default(
    cli_env: dict[str, str], callboard_cmd: list[str]
) -> None:
    with socket.socket() as unused:  # a port nobody listens on, held while asked
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        result = cli(callboard_cmd, cli_env, "health", "--metrics", str(port))
    assert result.returncode == EXIT_CONNECTION
    assert "metrics_address" in result.stdout
    assert "off by default" in result.stdout


def test_a_malformed_task_id_is_a_usage_error(
    cli_env: dict[str, str], callboard_cmd: list[str]
) -> None:
    for command in ("status", "result", "history"):
        result = cli(callboard_cmd, cli_env, command, "bad id!")
        assert result.returncode == EXIT_USAGE, (command, result.stderr)
        assert "invalid durable task id 'bad id!'" in result.stderr


def test_a_missing_tls_file_is_named(cli_env: dict[str, str], callboard_cmd: list[str]) -> None:
    result = cli(callboard_cmd, cli_env, "--tls-ca", "/nonexistent.pem", "agents")
    assert result.returncode == EXIT_USAGE
    assert "'/nonexistent.pem' (--tls-ca) does not exist" in result.stderr


def test_submit_without_a_payload_sends_an_empty_object(
    daemon: Daemon, prefix: str, cli_env: dict[str, str], callboard_cmd: list[str]
) -> None:
    result = cli(callboard_cmd, cli_env, "submit", "--prefix", prefix, "echo")
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stdout == "{}\n"
