"""``callboard server``: a real nats-server in the foreground, stopped cleanly by SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from nats.aio.msg import Msg
from system_support import Daemon, Proc, run_cli_async, wait_exit, wait_line

from bus import connect

pytestmark = pytest.mark.system

_LISTENING = re.compile(r"^nats-server listening on (nats://127\.0\.0\.1:(\d+)) \(pid (\d+)\)$")


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.mark.anyio
async def test_server_serves_and_stops_with_its_child_on_sigterm(
    procs: Callable[..., Proc], cli_env: dict[str, str], callboard_cmd: list[str], tmp_path: Path
) -> None:
    env = {k: v for k, v in cli_env.items() if k != "NATS_URL"}
    env["XDG_DATA_HOME"] = str(tmp_path)  # the kept store goes there, not in ~
    proc = procs([*callboard_cmd, "server", "--port", "0"], env=env, name="callboard server")
    line = await wait_line(proc.stdout, _LISTENING, timeout=20)
    match = _LISTENING.match(line)
    assert match is not None
    url, port, server_pid = match.group(1), int(match.group(2)), int(match.group(3))
    assert port > 0
    assert server_pid != proc.pid
    try:
        assert _pid_exists(server_pid)

        async with connect(url, name="system-test") as nc:
            sub = await nc.subscribe("ping.server-test", cb=_answer)
            with anyio.fail_after(5):
                reply = await nc.request("ping.server-test", b"hello", timeout=5)
            await sub.unsubscribe()
        assert reply.data == b"pong: hello"

        proc.send_signal(signal.SIGTERM)
        assert await wait_exit(proc) == 0, proc.output()
        assert not _pid_exists(server_pid), "the nats-server child outlived `callboard server`"
    finally:
        # Never leak the child server, even when an assertion above failed.
        if _pid_exists(server_pid):
            os.kill(server_pid, signal.SIGKILL)


async def _answer(msg: Msg) -> None:
    await msg.respond(b"pong: " + msg.data)


async def _start_server(
    procs: Callable[..., Proc], env: dict[str, str], callboard_cmd: list[str], *flags: str
) -> tuple[Proc, str, str]:
    """``callboard server`` on a free port: the process, its URL and its store line."""
    proc = procs([*callboard_cmd, "server", "--port", "0", *flags], env=env, name="server")
    line = await wait_line(proc.stdout, _LISTENING, timeout=20)
    match = _LISTENING.match(line)
    assert match is not None
    store = await wait_line(proc.stdout, "JetStream store:", timeout=5)
    return proc, match.group(1), store


@pytest.mark.anyio
async def test_a_durable_task_survives_a_restart_of_callboard_server(
    procs: Callable[..., Proc],
    cli_env: dict[str, str],
    callboard_cmd: list[str],
    tmp_path: Path,
    start_daemon: Callable[..., Daemon],
) -> None:
    """The store is kept by default ($XDG_DATA_HOME/callboard): no agent takes the task,
    the server stops and starts again, the task is still there, and an agent runs it."""
    env = {k: v for k, v in cli_env.items() if k != "NATS_URL"}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    proc, url, store = await _start_server(procs, env, callboard_cmd)
    assert store == f"JetStream store: {tmp_path / 'data' / 'callboard' / 'jetstream'} " + (
        "(kept across restarts)"
    )
    cli = {**env, "NATS_URL": url}
    submitted = await run_cli_async(
        callboard_cmd, cli, ["submit", "math", '{"expression": "6*7"}', "--durable", "--no-wait"]
    )
    assert submitted.returncode == 0, submitted.stderr
    task_id = json.loads(submitted.stdout)["task_id"]

    proc.send_signal(signal.SIGTERM)
    assert await wait_exit(proc) == 0, proc.output()
    _, url, _ = await _start_server(procs, env, callboard_cmd)

    cli = {**env, "NATS_URL": url}
    status = await run_cli_async(callboard_cmd, cli, ["status", task_id])
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"task {task_id}: submitted, capability math"), status.stdout

    start_daemon([{"type": "math"}], prefix="agents", env=cli, durable={})
    result = await run_cli_async(callboard_cmd, cli, ["result", task_id, "--wait"])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"value": 42}


@pytest.mark.anyio
async def test_status_of_a_task_lost_with_a_temporary_store_does_not_claim_it_was_never_submitted(
    procs: Callable[..., Proc], cli_env: dict[str, str], callboard_cmd: list[str], tmp_path: Path
) -> None:
    env = {k: v for k, v in cli_env.items() if k != "NATS_URL"}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    proc, url, store = await _start_server(procs, env, callboard_cmd, "--temporary-store")
    assert store == "JetStream store: temporary, deleted on exit"
    cli = {**env, "NATS_URL": url}
    submitted = await run_cli_async(
        callboard_cmd, cli, ["submit", "math", '{"expression": "6*7"}', "--durable", "--no-wait"]
    )
    assert submitted.returncode == 0, submitted.stderr
    task_id = json.loads(submitted.stdout)["task_id"]
    proc.send_signal(signal.SIGTERM)
    assert await wait_exit(proc) == 0, proc.output()
    assert not (tmp_path / "data").exists(), "a temporary store was written to XDG_DATA_HOME"

    _, url, _ = await _start_server(procs, env, callboard_cmd, "--temporary-store")
    status = await run_cli_async(callboard_cmd, {**env, "NATS_URL": url}, ["status", task_id])
    assert status.returncode == 3, status.stderr
    assert f"no record of task {task_id}" in status.stderr
    assert "the server's JetStream store was lost" in status.stderr


def test_an_unusable_store_dir_is_a_usage_error_that_names_it(
    cli_env: dict[str, str], callboard_cmd: list[str], tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = subprocess.run(
        [*callboard_cmd, "server", "--port", "0", "--store-dir", str(blocker / "store")],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2, result.stderr
    assert f"cannot create the JetStream store {blocker / 'store'}" in result.stderr


@pytest.mark.anyio
async def test_a_second_server_on_the_same_store_is_refused(
    procs: Callable[..., Proc], cli_env: dict[str, str], callboard_cmd: list[str], tmp_path: Path
) -> None:
    """nats-server does not lock its store; two servers on one would corrupt it."""
    env = {k: v for k, v in cli_env.items() if k != "NATS_URL"}
    await _start_server(procs, env, callboard_cmd, "--store-dir", str(tmp_path))
    second = await anyio.to_thread.run_sync(
        lambda: subprocess.run(
            [*callboard_cmd, "server", "--port", "0", "--store-dir", str(tmp_path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
        )
    )
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"another callboard server uses the JetStream store {tmp_path}" in second.stderr
