"""``--log-format json`` (or ``CALLBOARD_LOG_FORMAT=json``) for one-shot commands: every
line on stderr is JSON, usage errors included, and an error about a task carries the
task's fields (``task_id``, ``capability``, ``agent``) for a log pipeline to join on.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from system_support import Daemon, run_cli

from orchestrator.cli import EXIT_AGENT_ERROR, EXIT_NO_AGENT, EXIT_USAGE

pytestmark = pytest.mark.system


def json_lines(stderr: str) -> list[dict[str, Any]]:
    """Every line of ``stderr`` as JSON (the test fails on one that is not)."""
    records = []
    for line in stderr.splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line on stderr: {line!r}\n{stderr}")
    return records


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["submit", "--timeout", "soon", "math", "{}"], "invalid duration 'soon'"),
        (["status", "bad id!"], "invalid durable task id"),
        (["submit"], "the following arguments are required: capability"),
        (["demo", "--prefix", "x"], "unrecognized arguments"),
        (["--prefix", "x", "demo"], "takes no connection flags"),
    ],
)
@pytest.mark.parametrize("how", ["flag", "env"])
def test_usage_errors_are_json_lines(
    args: list[str], says: str, how: str, cli_env: dict[str, str], callboard_cmd: list[str]
) -> None:
    if how == "flag":
        args = ["--log-format", "json", *args]
    else:
        cli_env = {**cli_env, "CALLBOARD_LOG_FORMAT": "json"}
    result = run_cli(callboard_cmd, cli_env, args)
    assert result.returncode == EXIT_USAGE
    [record] = json_lines(result.stderr)
    assert record["level"] == "error"
    assert says in record["message"]


def test_task_errors_carry_the_task_fields(
    daemon: Daemon, prefix: str, cli_env: dict[str, str], callboard_cmd: list[str]
) -> None:
    base = ["--log-format", "json", "submit", "--prefix", prefix]
    math_id = daemon.agent_ids[0]

    failed = run_cli(callboard_cmd, cli_env, [*base, "--task-id", "json-t1", "math", '{"x": 1}'])
    assert failed.returncode == EXIT_AGENT_ERROR
    [record] = json_lines(failed.stderr)
    assert (record["task_id"], record["capability"], record["agent"]) == (
        "json-t1",
        "math",
        math_id,
    )

    nobody = run_cli(callboard_cmd, cli_env, [*base, "--task-id", "json-t2", "translate"])
    assert nobody.returncode == EXIT_NO_AGENT
    [record] = json_lines(nobody.stderr)
    assert (record["task_id"], record["capability"]) == ("json-t2", "translate")

    answered = run_cli(callboard_cmd, cli_env, [*base, "-v", "math", '{"expression": "1"}'])
    records = json_lines(answered.stderr)
    told = [r for r in records if "answered by" in r["message"]]
    assert told and told[0]["agent"] == math_id and told[0]["capability"] == "math"
