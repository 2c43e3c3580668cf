"""What the CLI says at once when durable dispatch is not set up: ``submit --durable``
to a daemon without ``[durable]`` (the shipped ``deploy/agents.toml``), and ``monitor
--since`` on a prefix with no status stream. A real daemon and a real nats-server."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping

import pytest
from system_support import Daemon, Proc, run_cli

from bus import new_agent_suffix, new_task_id
from orchestrator.cli import EXIT_OK, EXIT_TIMEOUT

pytestmark = pytest.mark.system

NOTE = "no agent serves durable tasks of 'math' yet"


@pytest.fixture
def core_daemon(start_daemon: Callable[..., Daemon], prefix: str) -> Daemon:
    """A daemon as ``deploy/agents.toml`` ships it: math agents, no ``[durable]``."""
    suffix = new_agent_suffix()
    return start_daemon(
        [{"type": "math", "id": f"math-{suffix}", "replicas": 2, "max_concurrency": 32}],
        prefix=prefix,
        heartbeat_interval=60.0,
    )


def test_submit_durable_without_a_durable_agent_says_so_at_once(
    core_daemon: Daemon,
    prefix: str,
    cli_env: Mapping[str, str],
    callboard_cmd: list[str],
    procs: Callable[..., Proc],
) -> None:
    started = time.monotonic()
    proc = procs(
        [
            *callboard_cmd,
            "submit",
            "math",
            '{"expression": "6*7"}',
            "--durable",
            "--timeout",
            "3",
            "--prefix",
            prefix,
        ],
        env=cli_env,
        name="submit",
    )
    note = proc.stderr.wait_for(NOTE, timeout=10.0)
    noted_after = time.monotonic() - started
    assert "[durable]" in note and "README" in note, note
    assert proc.wait() == EXIT_TIMEOUT, proc.output()
    waited = time.monotonic() - started
    # the note comes before the 3 s wait, not with the timeout at its end
    assert noted_after < waited - 2.0, (noted_after, waited)
    assert "still submitted" in proc.stderr.text, proc.output()

    # --no-wait stores the task and says the same
    task_id = new_task_id()
    done = run_cli(
        callboard_cmd,
        cli_env,
        ["submit", "math", "{}", "--no-wait", "--task-id", task_id, "--prefix", prefix],
    )
    assert done.returncode == EXIT_OK, done.stderr
    assert json.loads(done.stdout)["task_id"] == task_id
    assert NOTE in done.stderr


def test_submit_durable_to_a_durable_agent_has_no_note(
    start_daemon: Callable[..., Daemon],
    prefix: str,
    cli_env: Mapping[str, str],
    callboard_cmd: list[str],
) -> None:
    start_daemon(
        [{"type": "math", "id": f"math-{new_agent_suffix()}"}],
        prefix=prefix,
        heartbeat_interval=60.0,
        durable={"storage": "memory"},
    )
    args = ["submit", "math", '{"expression": "6*7"}', "--durable", "--prefix", prefix]
    done = run_cli(callboard_cmd, cli_env, args)
    assert (done.returncode, done.stdout) == (EXIT_OK, '{"value":42}\n'), done.stderr
    assert "no agent serves" not in done.stderr


def test_monitor_since_without_a_status_stream_says_it_cannot_replay(
    core_daemon: Daemon,
    prefix: str,
    cli_env: Mapping[str, str],
    callboard_cmd: list[str],
    procs: Callable[..., Proc],
) -> None:
    proc = procs(
        [*callboard_cmd, "monitor", "--since", "10m", "--json", "--count", "1", "--prefix", prefix],
        env=cli_env,
        name="monitor",
    )
    line = proc.stderr.wait_for("cannot replay --since 10m")
    assert "[durable]" in line and "callboard setup" in line and "live" in line, line
    proc.stderr.wait_for("following ")
    # it goes on live: the next event is printed
    done = run_cli(
        callboard_cmd, cli_env, ["submit", "math", '{"expression": "1+1"}', "--prefix", prefix]
    )
    assert done.returncode == EXIT_OK, done.stderr
    assert proc.wait() == EXIT_OK, proc.output()
    assert json.loads(proc.stdout.lines[0])["agent"] in core_daemon.agent_ids
