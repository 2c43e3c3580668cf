"""``callboard run`` with metrics: ``/metrics`` passes promtool, ``/healthz`` follows the daemon."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from nats.aio.client import Client
from prometheus_client.parser import text_string_to_metric_families
from refusal_support import (
    exactly,
    hpub,
    raw_client,
    refusals,
    send_and_confirm,
    wait_for_refusals,
)
from system_support import (
    STARTUP_TIMEOUT,
    Daemon,
    Proc,
    daemon_toml,
    parse_ready_line,
    run_cli,
    wait_exit,
    wait_line,
    watch_status,
)

from actors import READY_LINE
from bus import AgentError, Subjects, TaskClient, new_agent_suffix, new_task_id
from bus.codec import OPERATION, TASK_ID
from bus.security import CANCEL_TOKEN
from orchestrator.cli import EXIT_USAGE

pytestmark = [pytest.mark.system, pytest.mark.anyio]


def fetch(url: str) -> tuple[int, bytes]:
    """(status, body) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


async def get(url: str) -> tuple[int, bytes]:
    return await anyio.to_thread.run_sync(fetch, url)


async def test_metrics_pass_promtool_and_count_the_tasks(
    start_daemon: Callable[..., Daemon], prefix: str, nc: Client
) -> None:
    suffix = new_agent_suffix()
    math_id, echo_id = f"math-{suffix}", f"echo-{suffix}"
    daemon = await anyio.to_thread.run_sync(
        partial(
            start_daemon,
            [{"type": "math", "id": math_id}, {"type": "echo", "id": echo_id}],
            prefix=prefix,
            heartbeat_interval=60.0,
            metrics_address="127.0.0.1:0",
        )
    )
    url = daemon.metrics_url
    assert url.startswith("http://127.0.0.1:")
    client = TaskClient(nc, prefix=prefix)
    for expression in ("6*7", "2**10"):
        await client.request("math", {"expression": expression})
    with pytest.raises(AgentError):
        await client.request("math", {"expression": "1/0"})
    await client.request("echo", {"hello": "metrics"})

    status, body = await get(url + "/metrics")
    assert status == 200
    with anyio.fail_after(30):
        checked = await anyio.run_process(["promtool", "check", "metrics"], input=body, check=False)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float | None:
        return samples.get((name, tuple(sorted(labels.items()))))

    math = {"agent": math_id, "capability": "math"}
    assert value("callboard_agent_tasks_received_total", **math) == 3
    assert value("callboard_agent_tasks_completed_total", **math) == 2
    assert value("callboard_agent_tasks_failed_total", **math, code="400") == 1
    assert value("callboard_agent_task_duration_seconds_count", **math) == 3
    assert value("callboard_agent_tasks_completed_total", agent=echo_id, capability="echo") == 1
    assert value("callboard_agent_up", agent=echo_id, kind="echo") == 1
    assert value("callboard_nats_connected", connection="callboard-daemon") == 1
    assert value("process_cpu_seconds_total") is not None
    assert any(name == "python_info" for name, _ in samples)

    status, body = await get(url + "/healthz")
    assert status == 200, body
    assert msgspec.json.decode(body) == {
        "status": "ok",
        "connected": True,
        "connection": "connected",
        "agents": {math_id: "serving", echo_id: "serving"},
    }

    daemon.proc.send_signal(signal.SIGTERM)
    assert await wait_exit(daemon.proc) == 0, daemon.proc.output()


def start_with_flags(
    procs: Callable[..., Proc],
    callboard_cmd: list[str],
    cli_env: dict[str, str],
    config: Path,
    *flags: str,
) -> Daemon:
    """``callboard run CONFIG FLAGS``, awaited by its ready line."""
    proc = procs([*callboard_cmd, "run", str(config), *flags], env=cli_env, name="daemon")
    ids = parse_ready_line(proc.stderr.wait_for(READY_LINE, STARTUP_TIMEOUT))
    return Daemon(proc=proc, agent_ids=ids, config=config)


async def test_the_metrics_flag_wins_and_healthz_says_draining_on_sigterm(
    procs: Callable[..., Proc],
    callboard_cmd: list[str],
    cli_env: dict[str, str],
    tmp_path: Path,
    prefix: str,
    nc: Client,
) -> None:
    echo_id = f"echo-{new_agent_suffix()}"
    config = tmp_path / "daemon.toml"
    # the file says port 9; the flag must win
    settings: dict[str, Any] = {"heartbeat_interval": 60.0, "metrics_address": "127.0.0.1:9"}
    config.write_text(daemon_toml(prefix, [{"type": "echo", "id": echo_id}], **settings))
    daemon = await anyio.to_thread.run_sync(
        start_with_flags, procs, callboard_cmd, cli_env, config, "--metrics", ":0"
    )
    url = daemon.metrics_url
    assert not url.endswith(":9")
    assert (await get(url + "/healthz"))[0] == 200

    replies: list[Any] = []

    async def slow_task() -> None:
        replies.append(await TaskClient(nc, prefix=prefix).request("echo", {"delay_ms": 2000}))

    async with watch_status(nc, prefix) as watch, anyio.create_task_group() as tg:
        tg.start_soon(slow_task)
        await watch.wait_state("started", agent=echo_id)
        daemon.proc.send_signal(signal.SIGTERM)
        await wait_line(daemon.proc.stderr, "SIGTERM: shutting down")
        # the task in flight keeps the daemon (and its endpoint) up through the drain
        status, body = await get(url + "/healthz")
        assert status == 503, body
        assert msgspec.json.decode(body)["status"] == "draining"
    assert len(replies) == 1
    assert await wait_exit(daemon.proc) == 0, daemon.proc.output()


def test_a_bad_metrics_address_is_a_usage_error(
    tmp_path: Path, prefix: str, cli_env: dict[str, str], callboard_cmd: list[str]
) -> None:
    config = tmp_path / "daemon.toml"
    config.write_text(daemon_toml(prefix, [{"type": "echo"}]))
    result = run_cli(callboard_cmd, cli_env, ["run", str(config), "--metrics", "everywhere"])
    assert result.returncode == EXIT_USAGE, result.stderr
    assert "invalid metrics address 'everywhere'" in result.stderr
    assert "HOST:PORT" in result.stderr


async def test_what_the_daemon_refuses_from_the_bus_is_counted_by_reason(
    start_daemon: Callable[..., Daemon], prefix: str, nc: Client, nats_url: str
) -> None:
    """Each attack or malformed message, sent for real, moves its reason by exactly one;
    tasks, pings and the caller's own cancel move none."""
    echo_id = f"echo-{new_agent_suffix()}"
    daemon = await anyio.to_thread.run_sync(
        partial(
            start_daemon,
            [{"type": "echo", "id": echo_id}],
            prefix=prefix,
            heartbeat_interval=60.0,
            metrics_address="127.0.0.1:0",
        )
    )
    url = daemon.metrics_url
    assert await refusals(url) == exactly({})
    client = TaskClient(nc, prefix=prefix)
    subjects = Subjects(prefix)
    async with watch_status(nc, prefix) as watch, anyio.create_task_group() as tg:
        # the legitimate paths: a task, a ping on each address, the caller's own cancel
        done = new_task_id()
        reply = await client.request("echo", {"hello": 1}, task_id=done)
        assert reply.payload == {"hello": 1}
        # a cancel that comes too late, with the caller's token, on the control address
        late = {OPERATION: "cancel", TASK_ID: done, CANCEL_TOKEN: client.cancel_keys.token(done)}
        answer = await nc.request(subjects.agent(echo_id), b"", timeout=5, headers=late)
        assert json.loads(answer.data) == {"cancelled": False}
        await nc.request(subjects.agent(echo_id), b"", timeout=5, headers={OPERATION: "ping"})
        ping = {OPERATION: "ping"}
        await nc.request(subjects.agent_task("echo", echo_id), b"", timeout=5, headers=ping)
        cancelled: list[AgentError] = []
        mine = new_task_id()

        async def cancelled_by_its_caller() -> None:
            try:
                await client.request("echo", {"delay_ms": 10_000}, timeout=20, task_id=mine)
            except AgentError as exc:
                cancelled.append(exc)

        tg.start_soon(cancelled_by_its_caller)
        await watch.wait_state("started", task_id=mine)
        await client.cancel(mine)
        await watch.wait_state("cancelled", task_id=mine)
        assert await refusals(url) == exactly({})

        # reflection: a task on the queue and on the capability address, a ping on the
        # control address, each with a reply subject that is not an inbox
        forged_reply = f"{prefix}.status.{echo_id}.offline"
        await nc.publish(subjects.task("echo"), b"{}", reply=forged_reply)
        await nc.publish(subjects.agent_task("echo", echo_id), b"{}", reply=forged_reply)
        await nc.publish(subjects.agent(echo_id), b"", reply="somewhere.else", headers=ping)
        # cancels of a running task without its caller's token: broadcast, with a wrong
        # token, and on the control address
        victim: dict[str, Any] = {}
        task_id = new_task_id()

        async def runs_to_the_end() -> None:
            reply = await client.request("echo", {"delay_ms": 3000}, timeout=20, task_id=task_id)
            victim["result"] = reply.payload

        tg.start_soon(runs_to_the_end)
        await watch.wait_state("started", task_id=task_id)
        await nc.publish(subjects.cancel(), b"stop", headers={TASK_ID: task_id})
        wrong = {TASK_ID: task_id, CANCEL_TOKEN: "0" * 32}
        await nc.publish(subjects.cancel(), b"stop", headers=wrong)
        direct = {OPERATION: "cancel", TASK_ID: task_id}
        answer = await nc.request(subjects.agent(echo_id), b"stop", timeout=5, headers=direct)
        assert json.loads(answer.data)["cancelled"] is False
        # malformed frames: reply subjects that are not UTF-8, a header block that is not one
        stream = await raw_client(nats_url)
        async with stream:
            await send_and_confirm(
                stream,
                f"PUB {subjects.task('echo')} ".encode()
                + b"\xff 2\r\n{}\r\n"
                + f"PUB {subjects.cancel()} ".encode()
                + b"\xfe 0\r\n\r\n"
                + hpub(subjects.cancel(), b"NATS/1.0 \xff\xfe\r\n\r\n"),
            )
        expected = {"reply_not_inbox": 3, "cancel_token": 3, "malformed_frame": 3}
        assert await wait_for_refusals(url, expected) == exactly(expected)
    assert victim["result"] == {"delay_ms": 3000}
    assert [exc.code for exc in cancelled] == [499]
    # the daemon goes on serving, and a task moves no refusal
    assert (await client.request("echo", {"after": 1})).payload == {"after": 1}
    assert await refusals(url) == exactly(expected)
