"""``callboard ask`` and ``callboard agents`` as a user runs them."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest
from llm_servers import FakeOllama, closed_port_url
from system_support import Daemon, run_cli

from orchestrator.cli import EXIT_AGENT_ERROR, EXIT_NO_AGENT, EXIT_OK

pytestmark = pytest.mark.system


def cli(cmd: list[str], env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(cmd, env, args)


def test_agents_lists_the_live_agents_with_their_load(
    start_daemon: Callable[..., Daemon],
    prefix: str,
    cli_env: dict[str, str],
    callboard_cmd: list[str],
) -> None:
    start_daemon([{"type": "math", "id": "m", "replicas": 2}, {"type": "echo"}], prefix=prefix)
    table = cli(callboard_cmd, cli_env, "agents", "--prefix", prefix)
    assert table.returncode == EXIT_OK, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["AGENT", "KIND", "CAPABILITIES", "IN", "FLIGHT", "LAST", "SEEN"]
    assert [line.split()[0] for line in lines[1:3]] == ["echo-" + lines[1].split()[0][5:], "m-1"]
    rows = json.loads(cli(callboard_cmd, cli_env, "agents", "--prefix", prefix, "--json").stdout)
    assert sorted(r["agent"] for r in rows if r["kind"] == "math") == ["m-1", "m-2"]
    assert all(r["in_flight"] == 0 and r["max_concurrency"] == 64 for r in rows)
    empty = cli(callboard_cmd, cli_env, "agents", "--prefix", prefix + "-nobody")
    assert empty.returncode == EXIT_NO_AGENT
    assert "no agents answered" in empty.stderr


def test_ask_decomposes_routes_and_aggregates(
    start_daemon: Callable[..., Daemon],
    prefix: str,
    cli_env: dict[str, str],
    callboard_cmd: list[str],
) -> None:
    start_daemon([{"type": "math", "id": "m"}, {"type": "echo", "id": "e"}], prefix=prefix)
    result = cli(callboard_cmd, cli_env, "ask", "--prefix", prefix, "Calculate 6*7. Then echo done")
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stdout.splitlines() == ["[1] math (m): 42", "[2] echo (e): done"]
    assert "1. math by m" in result.stderr and '{"value":42}' in result.stderr
    unroutable = cli(callboard_cmd, cli_env, "ask", "--prefix", prefix, "paint a picture")
    assert unroutable.returncode == EXIT_NO_AGENT
    assert "live capabilities: echo, math" in unroutable.stderr


def test_ask_with_an_unreachable_model_says_how_to_start_it(
    start_daemon: Callable[..., Daemon],
    prefix: str,
    cli_env: dict[str, str],
    callboard_cmd: list[str],
) -> None:
    start_daemon([{"type": "echo", "id": "e"}], prefix=prefix)
    env = {**cli_env, "CALLBOARD_MODEL": "llama3.2"}  # the default --model
    args = (
        "ask",
        "--prefix",
        prefix,
        "--model-url",
        closed_port_url(),
        "--model-timeout",
        "2",
        "echo hi",
    )
    failed = cli(callboard_cmd, env, *args)
    assert failed.returncode == EXIT_AGENT_ERROR, failed.stderr
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("callboard ask: ") and "(hint: start Ollama" in last
    assert failed.stdout == ""
    ruled = cli(callboard_cmd, env, "ask", "--prefix", prefix, "--model", "", "echo hi")
    assert ruled.returncode == EXIT_OK, ruled.stderr
    assert ruled.stdout.splitlines() == ["[1] echo (e): hi"]


def test_ask_with_a_model_plans_and_answers(
    start_daemon: Callable[..., Daemon],
    prefix: str,
    cli_env: dict[str, str],
    callboard_cmd: list[str],
) -> None:
    start_daemon([{"type": "math", "id": "m"}, {"type": "echo", "id": "e"}], prefix=prefix)
    plan = {
        "steps": [
            {"capability": "math", "payload": {"expression": "6*7"}},
            {"capability": "echo", "payload": "hi"},
        ]
    }
    with FakeOllama(models=["llama3.2"]) as server:
        server.script(json.dumps(plan), "6*7 is 42, and the echo said hi.")
        result = cli(
            callboard_cmd,
            cli_env,
            "ask",
            "--prefix",
            prefix,
            "--model",
            "llama3.2",
            "--model-url",
            server.url,
            "what is 6*7, then echo hi",
        )
        planning, aggregating = server.chat_requests
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stdout.splitlines() == ["6*7 is 42, and the echo said hi."]
    assert "1. math by m" in result.stderr and "2. echo by e" in result.stderr
    assert planning.body["model"] == "llama3.2"
    steps = planning.body["format"]["properties"]["steps"]  # the plan as structured output
    branches = steps["items"]["oneOf"]  # one per capability, its payload typed
    assert [b["properties"]["capability"]["const"] for b in branches] == ["echo", "math"]
    math_payload = branches[1]["properties"]["payload"]["anyOf"][0]
    assert math_payload["required"] == ["expression"]
    assert planning.body["options"]["temperature"] == 0  # the likeliest plan
    assert '{"value":42}' in aggregating.body["messages"][-1]["content"]
