"""The durable-task CLI against a real daemon with a ``[durable]`` section:
``submit --durable``, ``status``, ``result``, ``history`` and ``monitor --since``."""

from __future__ import annotations

import json
from collections.abc import Callable

import anyio
import pytest
from system_support import Daemon, run_cli

from bus import ConnectOptions, connect, new_agent_suffix, new_task_id
from bus.durable import DurableNames
from orchestrator.cli import EXIT_AGENT_ERROR, EXIT_NO_AGENT, EXIT_OK, EXIT_USAGE
from orchestrator.cli._common import parse_duration

pytestmark = pytest.mark.system

DURABLE = {"storage": "memory", "ack_wait": 2, "retry_delay": 0.1, "max_deliver": 2}


@pytest.fixture
def durable_daemon(start_daemon: Callable[..., Daemon], prefix: str) -> Daemon:
    suffix = new_agent_suffix()
    return start_daemon(
        [{"type": "math", "id": f"math-{suffix}"}, {"type": "echo", "id": f"echo-{suffix}"}],
        prefix=prefix,
        heartbeat_interval=60.0,
        durable=DURABLE,
    )


@pytest.fixture
def cli(
    durable_daemon: Daemon, prefix: str, cli_env: dict[str, str], callboard_cmd: list[str]
) -> Callable[..., tuple[int, str, str]]:
    """Run ``callboard ARGS --prefix PREFIX``: (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        done = run_cli(callboard_cmd, cli_env, [*args, "--prefix", prefix])
        return done.returncode, done.stdout, done.stderr

    return run


def test_a_durable_task_can_be_followed_by_its_id(
    durable_daemon: Daemon, cli: Callable[..., tuple[int, str, str]]
) -> None:
    task_id = new_task_id()
    code, out, err = cli(
        "submit", "math", '{"expression": "6*7"}', "--durable", "--task-id", task_id
    )
    assert (code, out) == (EXIT_OK, '{"value":42}\n'), err

    code, out, err = cli("status", task_id)
    assert code == EXIT_OK, err
    assert f"task {task_id}: completed, capability math, agent {durable_daemon.agent_ids[0]}" in out
    assert "1 attempt(s)" in out
    code, out, _ = cli("status", task_id, "--json")
    record = json.loads(out)
    assert (record["state"], record["result"], record["sender"]) == (
        "completed",
        {"value": 42},
        "cli",
    )

    assert cli("result", task_id) == (EXIT_OK, '{"value":42}\n', "")

    code, out, err = cli("history", task_id)
    assert code == EXIT_OK, err
    lines = out.splitlines()
    assert [line.split()[0] for line in lines].count("record") == 3
    states = [word for line in lines for word in line.split() if word in {"accepted", "started"}]
    assert states == ["accepted", "started"]
    assert "completed" in lines[-1] or "completed" in lines[-2]
    # the record's key (CAPABILITY.TASK_ID) names the task as well as its ID
    assert cli("history", f"math.{task_id}") == (code, out, err)

    code, out, err = cli(
        "monitor", "--since", "5m", "--json", "--count", "1", "--state", "completed"
    )
    assert code == EXIT_OK, err
    events = [json.loads(line) for line in out.splitlines()]
    assert task_id in {e.get("task_id") for e in events}


def test_failures_and_unknown_ids_have_their_exit_codes(
    cli: Callable[..., tuple[int, str, str]],
) -> None:
    task_id = new_task_id()
    code, _, err = cli("submit", "math", '{"expression": "1/0"}', "--durable", "--task-id", task_id)
    assert code == EXIT_AGENT_ERROR
    assert "division by zero" in err
    code, out, _ = cli("status", task_id)
    assert "failed" in out and "error 400 (bad_input)" in out
    code, _, err = cli("result", task_id)
    assert code == EXIT_AGENT_ERROR and "division by zero" in err

    code, _, err = cli("result", "no-such-task")
    assert code == EXIT_NO_AGENT
    assert "no durable task no-such-task" in err
    code, _, err = cli("submit", "math", "{}", "--durable", "--task-id", "a.b")
    assert code != EXIT_OK and "invalid durable task id" in err
    code, _, err = cli("monitor", "--since", "ten minutes")
    assert code == EXIT_USAGE and "invalid duration" in err


def test_a_record_that_is_not_a_record_is_a_clear_error_not_a_traceback(
    cli: Callable[..., tuple[int, str, str]], cli_env: dict[str, str], prefix: str
) -> None:
    task_id = new_task_id()

    async def write_garbage() -> None:
        options = ConnectOptions(servers=(cli_env["NATS_URL"],), connect_attempts=1)
        async with connect(options=options) as nc:
            names = DurableNames(prefix)
            subject = names.key_subject(names.record_key("echo", task_id))
            await nc.jetstream().publish(subject, b'{"state": 7, "junk": [')

    anyio.run(write_garbage)
    for command in (["status", task_id], ["result", task_id], ["history", task_id]):
        code, out, err = cli(*command)
        assert code == EXIT_AGENT_ERROR, (command, out, err)
        assert "Traceback" not in err, err
        assert f"the record of durable task {task_id}" in err and "is not a task record" in err


def test_durations() -> None:
    assert [parse_duration(t) for t in ("90", "30s", "10m", "2h", "1d", "250ms")] == [
        90,
        30,
        600,
        7200,
        86400,
        0.25,
    ]
