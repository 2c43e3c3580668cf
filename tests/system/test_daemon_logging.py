"""``callboard run --log-format json``: stderr is JSON lines, and a task's lines carry its ID."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from nats.aio.client import Client
from system_support import (
    STARTUP_TIMEOUT,
    Proc,
    daemon_toml,
    parse_ready_line,
    run_cli,
    wait_exit,
    wait_line,
    watch_status,
)

from actors import READY_LINE, Agent
from bus import AgentError, AgentMessage, AgentOverloaded, TaskClient, new_agent_suffix
from orchestrator.cli import EXIT_USAGE

pytestmark = [pytest.mark.system, pytest.mark.anyio]

HERE = Path(__file__).resolve().parent


class Crash(Agent):
    """Raises an unexpected error on every task: a handler bug, for the daemon of this test.

    The daemon loads it as ``type = "test_daemon_logging:Crash"`` with this
    directory on ``PYTHONPATH``.
    """

    kind = "crash"
    capabilities = ("crash",)

    async def handle(self, task: AgentMessage) -> Any:
        raise RuntimeError(f"bug on purpose: {task.payload}")


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` as a JSON object; fails on the first line that is not one."""
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}\nstderr:\n{text}")
        assert isinstance(record, dict), line
        assert {"ts", "level", "logger", "message"} <= record.keys(), line
        records.append(record)
    return records


async def test_json_logs_carry_task_ids_and_nothing_else_reaches_stderr(
    procs: Callable[..., Proc],
    callboard_cmd: list[str],
    cli_env: dict[str, str],
    tmp_path: Path,
    prefix: str,
    nc: Client,
) -> None:
    suffix = new_agent_suffix()
    crash_id, echo_id = f"crash-{suffix}", f"echo-{suffix}"
    config = tmp_path / "daemon.toml"
    agents = [
        {"type": "test_daemon_logging:Crash", "id": crash_id},
        {"type": "echo", "id": echo_id},
    ]
    config.write_text(
        daemon_toml(
            prefix, agents, heartbeat_interval=60.0, grace_period=0.5, metrics_address="127.0.0.1:0"
        )
    )
    env = {
        **cli_env,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
    }
    proc = procs(
        [*callboard_cmd, "run", str(config), "--log-format", "json"], env=env, name="daemon"
    )
    ready = await wait_line(proc.stderr, READY_LINE, STARTUP_TIMEOUT)
    assert sorted(parse_ready_line(json.loads(ready)["message"])) == sorted([crash_id, echo_id])

    client = TaskClient(nc, prefix=prefix)
    crash_task = f"bug-{suffix}"
    with pytest.raises(AgentError) as failed:
        await client.request("crash", {"n": 1}, task_id=crash_task)
    assert failed.value.code == 500
    crashed = json.loads(await wait_line(proc.stderr, crash_task))
    assert crashed["level"] == "error"
    assert (crashed["task_id"], crashed["agent"], crashed["capability"]) == (
        crash_task,
        crash_id,
        "crash",
    )
    assert "RuntimeError: bug on purpose" in crashed["exc"]
    assert crashed["exc"].startswith("Traceback (most recent call last):")

    # a task the shutdown's grace period cuts short is logged with its ID too
    slow_task = f"slow-{suffix}"
    async with watch_status(nc, prefix) as watch, anyio.create_task_group() as tg:

        async def slow() -> None:
            with pytest.raises(AgentOverloaded):
                await client.request("echo", {"delay_ms": 20000}, task_id=slow_task, timeout=15)

        tg.start_soon(slow)
        await watch.wait_state("started", task_id=slow_task)
        proc.send_signal(signal.SIGTERM)
    assert await wait_exit(proc) == 0, proc.output()

    records = json_lines(proc.stderr.text)
    cut_short = [r for r in records if r.get("task_id") == slow_task]
    assert [(r["level"], r["agent"], r["capability"]) for r in cut_short] == [
        ("warning", echo_id, "echo")
    ]
    assert "503" in cut_short[0]["message"]
    messages = [r["message"] for r in records]
    assert any(m.startswith("callboard daemon metrics on http://") for m in messages)
    assert any(m.startswith(READY_LINE) for m in messages)
    assert "daemon stopped" in messages


async def test_the_environment_picks_the_format_and_a_bad_value_is_a_usage_error(
    callboard_cmd: list[str], cli_env: dict[str, str]
) -> None:
    unreachable = ["health", "--agent", "x", "-s", "nats://127.0.0.1:1"]
    env = {**cli_env, "CALLBOARD_LOG_FORMAT": "json"}
    result = await anyio.to_thread.run_sync(run_cli, callboard_cmd, env, unreachable)
    assert result.returncode != 0
    [record] = json_lines(result.stderr)
    assert record["level"] == "error" and "could not connect to NATS" in record["message"]

    # the flag wins over the environment
    flagged = [*unreachable, "--log-format", "text"]
    result = await anyio.to_thread.run_sync(run_cli, callboard_cmd, env, flagged)
    assert result.stderr.startswith("callboard health: could not connect"), result.stderr

    env["CALLBOARD_LOG_FORMAT"] = "xml"
    result = await anyio.to_thread.run_sync(run_cli, callboard_cmd, env, unreachable)
    assert result.returncode == EXIT_USAGE
    assert "CALLBOARD_LOG_FORMAT='xml'" in result.stderr
