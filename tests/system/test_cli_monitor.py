"""``callboard monitor``: the status stream of one system, as text or JSON lines.

Its stdout is a pipe here, so without ``--json`` it prints one line per event (the
default off a terminal); the live table and ``--metrics`` are in ``test_monitor_live``.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Mapping

import pytest
from system_support import Daemon, Proc, run_cli

from bus import PROTOCOL_VERSION, new_agent_suffix
from orchestrator.cli import EXIT_AGENT_ERROR, EXIT_OK, EXIT_USAGE

pytestmark = pytest.mark.system


@pytest.fixture
def math_daemon(start_daemon: Callable[..., Daemon], prefix: str) -> Daemon:
    # No heartbeat during the test, so the only events are those of the tasks sent.
    return start_daemon(
        [{"type": "math", "id": f"math-{new_agent_suffix()}"}],
        prefix=prefix,
        heartbeat_interval=600.0,
    )


def start_monitor(
    procs: Callable[..., Proc],
    callboard_cmd: list[str],
    env: Mapping[str, str],
    prefix: str,
    *args: str,
) -> tuple[Proc, str]:
    """Start ``callboard monitor``; wait until it follows the status subject (that line)."""
    proc = procs([*callboard_cmd, "monitor", "--prefix", prefix, *args], env=env, name="monitor")
    return proc, proc.stderr.wait_for("following ")


def submit(
    callboard_cmd: list[str], env: Mapping[str, str], prefix: str, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*callboard_cmd, "submit", "--prefix", prefix, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=dict(env),
        timeout=20,
    )


def test_monitor_prints_the_events_of_a_task(
    math_daemon: Daemon,
    prefix: str,
    procs: Callable[..., Proc],
    cli_env: dict[str, str],
    callboard_cmd: list[str],
) -> None:
    agent = math_daemon.agent_ids[0]
    monitor, following = start_monitor(procs, callboard_cmd, cli_env, prefix, "--count", "3")
    assert following == f"following {prefix}.status.> (Ctrl-C to stop)"

    task_id = f"monitor-{new_agent_suffix()}"
    result = submit(
        callboard_cmd, cli_env, prefix, "--task-id", task_id, "math", '{"expression": "6*7"}'
    )
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stdout == '{"value":42}\n'

    assert monitor.wait() == EXIT_OK, monitor.output()
    monitor.stop()
    lines = monitor.stdout.lines
    assert len(lines) == 3, lines
    for line, state in zip(lines, ["accepted", "started", "completed"], strict=True):
        assert re.match(
            rf"^\d\d:\d\d:\d\d\.\d{{3}}  {re.escape(agent)}\s+{state}\s+math\s+"
            rf"task={re.escape(task_id)}(\s|$)",
            line,
        ), line
    assert re.search(r"task=\S+ \d+\.\dms$", lines[2]), lines[2]


def test_monitor_json_lines_are_the_raw_events(
    math_daemon: Daemon,
    prefix: str,
    procs: Callable[..., Proc],
    cli_env: dict[str, str],
    callboard_cmd: list[str],
) -> None:
    agent = math_daemon.agent_ids[0]
    monitor, _ = start_monitor(procs, callboard_cmd, cli_env, prefix, "--json", "--count", "3")

    task_id = f"monitor-{new_agent_suffix()}"
    result = submit(
        callboard_cmd, cli_env, prefix, "--task-id", task_id, "math", '{"expression": "1+1"}'
    )
    assert result.returncode == EXIT_OK, result.stderr

    assert monitor.wait() == EXIT_OK, monitor.output()
    monitor.stop()
    events = [json.loads(line) for line in monitor.stdout.lines]
    assert [e["state"] for e in events] == ["accepted", "started", "completed"]
    for event in events:
        assert event["v"] == PROTOCOL_VERSION
        assert event["agent"] == agent
        assert isinstance(event["ts"], float) and event["ts"] > 1_600_000_000
        assert event["task_id"] == task_id
        assert event["capability"] == "math"
    assert events[0]["sender"] == "cli"
    assert events[2]["elapsed_ms"] >= 0
    assert events[0]["ts"] <= events[1]["ts"] <= events[2]["ts"]


def test_monitor_state_filter_shows_only_failures(
    math_daemon: Daemon,
    prefix: str,
    procs: Callable[..., Proc],
    cli_env: dict[str, str],
    callboard_cmd: list[str],
) -> None:
    agent = math_daemon.agent_ids[0]
    monitor, following = start_monitor(
        procs, callboard_cmd, cli_env, prefix, "--state", "failed", "--json", "--count", "1"
    )
    assert following.startswith(f"following {prefix}.status.*.failed ")

    good = submit(callboard_cmd, cli_env, prefix, "math", '{"expression": "6*7"}')
    assert good.returncode == EXIT_OK, good.stderr
    bad_id = f"bad-{new_agent_suffix()}"
    bad = submit(
        callboard_cmd, cli_env, prefix, "--task-id", bad_id, "math", '{"expression": "1/0"}'
    )
    assert bad.returncode == EXIT_AGENT_ERROR

    assert monitor.wait() == EXIT_OK, monitor.output()
    monitor.stop()
    [line] = monitor.stdout.lines
    event = json.loads(line)
    assert event["state"] == "failed"
    assert event["agent"] == agent
    assert event["task_id"] == bad_id
    assert event["error"]["code"] == 400
    assert event["error"]["type"] == "bad_input"
    assert "division by zero" in event["error"]["message"]


def test_monitor_refuses_a_bad_metrics_address_before_connecting(
    prefix: str, cli_env: dict[str, str], callboard_cmd: list[str]
) -> None:
    env = {**cli_env, "NATS_URL": "nats://127.0.0.1:1"}  # never reached
    result = run_cli(callboard_cmd, env, ["monitor", "--prefix", prefix, "--metrics", "anywhere"])
    assert result.returncode == EXIT_USAGE, result.stderr
    assert "invalid metrics address 'anywhere'" in result.stderr
    assert result.stdout == ""
