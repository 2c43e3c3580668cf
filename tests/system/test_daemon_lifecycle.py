"""The ``callboard run`` daemon under stress: shutdown, server restarts, hostile input, kill -9."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio
import nats.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from system_support import Daemon, wait_exit, wait_line, watch_status

from bus import EmbeddedServer, NoAgentError, TaskClient, TaskTimeout, connect, new_agent_suffix
from bus.codec import AGENT_ID, DEADLINE, ERROR, ERROR_CODE, TASK_ID

pytestmark = [pytest.mark.system, pytest.mark.anyio]


async def start(
    start_daemon: Callable[..., Daemon], agents: list[dict[str, Any]], **kw: Any
) -> Daemon:
    """``start_daemon`` off the event loop (it blocks until the daemon's ready line)."""
    return await anyio.to_thread.run_sync(partial(start_daemon, agents, **kw))


async def request(
    nc: Client,
    subject: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    timeout: float = 10.0,
) -> Msg:
    """A raw NATS request: the test sees the reply's headers and body as they are."""
    return await nc.request(subject, body, timeout=timeout, headers=headers or None)


# --- a. graceful drain -------------------------------------------------------------------


async def test_sigterm_lets_the_task_in_flight_finish(
    start_daemon: Callable[..., Daemon], prefix: str, nc: Client
) -> None:
    echo_id = f"echo-{new_agent_suffix()}"
    daemon = await start(
        start_daemon, [{"type": "echo", "id": echo_id}], prefix=prefix, heartbeat_interval=600.0
    )
    task_id = f"drain-{new_agent_suffix()}"
    replies: list[Msg] = []

    async def send_slow_task() -> None:
        replies.append(
            await request(nc, f"{prefix}.task.echo", b'{"delay_ms": 1500}', {TASK_ID: task_id})
        )

    async with watch_status(nc, prefix) as watch:
        async with anyio.create_task_group() as tg:
            tg.start_soon(send_slow_task)
            await watch.wait_state("started", task_id=task_id)
            daemon.proc.send_signal(signal.SIGTERM)
        [reply] = replies
        assert reply.data == b'{"delay_ms":1500}'
        assert reply.headers is not None
        assert reply.headers[TASK_ID] == task_id
        assert reply.headers[AGENT_ID] == echo_id
        assert ERROR_CODE not in reply.headers

        completed = await watch.wait_state("completed", task_id=task_id)
        offline = await watch.wait_state("offline", agent=echo_id)
        assert watch.events.index(completed) < watch.events.index(offline)
        assert offline["reason"] == "shutdown"

    assert await wait_exit(daemon.proc) == 0, daemon.proc.output()
    assert "SIGTERM: shutting down" in daemon.proc.stderr.text


# --- b. grace period exceeded ------------------------------------------------------------


async def test_task_outliving_the_grace_period_gets_503_draining(
    start_daemon: Callable[..., Daemon], prefix: str, nc: Client
) -> None:
    echo_id = f"echo-{new_agent_suffix()}"
    daemon = await start(
        start_daemon,
        [{"type": "echo", "id": echo_id}],
        prefix=prefix,
        grace_period=0.5,
        heartbeat_interval=600.0,
    )
    task_id = f"grace-{new_agent_suffix()}"
    replies: list[Msg] = []

    async def send_long_task() -> None:
        # 5s is well under the task's 10s: only the shutdown can answer in time.
        replies.append(
            await request(
                nc,
                f"{prefix}.task.echo",
                b'{"delay_ms": 10000}',
                {TASK_ID: task_id},
                timeout=5.0,
            )
        )

    async with watch_status(nc, prefix) as watch:
        async with anyio.create_task_group() as tg:
            tg.start_soon(send_long_task)
            await watch.wait_state("started", task_id=task_id)
            daemon.proc.send_signal(signal.SIGTERM)
        [reply] = replies
        assert reply.headers is not None
        assert reply.headers[ERROR_CODE] == "503"
        assert reply.headers[TASK_ID] == task_id
        assert reply.headers[AGENT_ID] == echo_id
        assert "shut down before task" in reply.headers[ERROR]
        error = json.loads(reply.data)["error"]
        assert error["code"] == 503
        assert error["type"] == "draining"

        cancelled = await watch.wait_state("cancelled", task_id=task_id)
        assert cancelled["reason"] == "draining"
        await watch.wait_state("offline", agent=echo_id)

    assert await wait_exit(daemon.proc) == 0, daemon.proc.output()


# --- c. nats-server restart --------------------------------------------------------------


async def test_daemon_serves_again_after_a_server_restart(
    start_daemon: Callable[..., Daemon], prefix: str, cli_env: dict[str, str]
) -> None:
    first = EmbeddedServer(jetstream=False)
    second: EmbeddedServer | None = None
    await anyio.to_thread.run_sync(first.start)
    try:
        port, url = first.port, first.url
        math_id = f"math-{new_agent_suffix()}"
        daemon = await start(
            start_daemon,
            [{"type": "math", "id": math_id}],
            prefix=prefix,
            env={**cli_env, "NATS_URL": url, "CALLBOARD_LOG_REPEAT_WINDOW": "0"},  # each attempt
            nats={"reconnect_wait": 0.2},
            heartbeat_interval=600.0,
        )
        async with connect(url, name="restart-test-1") as nc:
            reply = await TaskClient(nc, prefix=prefix).request("math", {"expression": "6*7"})
        assert (reply.payload, reply.sender) == ({"value": 42}, math_id)

        await anyio.to_thread.run_sync(first.stop)
        await wait_line(daemon.proc.stderr, "disconnected from NATS", timeout=10)
        # Let the server stay down through several failed reconnect attempts (more
        # than a first connection is allowed): a daemon must never give up on it.
        for _ in range(6):
            await wait_line(daemon.proc.stderr, "NATS connection error", timeout=10)

        second = EmbeddedServer(port=port, jetstream=False)
        await anyio.to_thread.run_sync(second.start)
        assert second.url == url
        # nats-py re-sends the subscriptions and flushes before it reports the reconnect.
        await wait_line(daemon.proc.stderr, "reconnected to NATS", timeout=15)

        with anyio.fail_after(15):
            async with connect(url, name="restart-test-2") as nc:
                reply = await TaskClient(nc, prefix=prefix).request(
                    "math", {"expression": "6*7"}, timeout=5
                )
        assert (reply.payload, reply.sender) == ({"value": 42}, math_id)
        assert daemon.proc.alive(), daemon.proc.output()

        daemon.proc.send_signal(signal.SIGTERM)
        assert await wait_exit(daemon.proc) == 0, daemon.proc.output()
    finally:
        for server in (second, first):
            if server is not None:
                await anyio.to_thread.run_sync(server.stop)


# --- d. hostile input --------------------------------------------------------------------


_HOSTILE: list[tuple[str, bytes, dict[str, str], int, str]] = [
    ("not JSON", b"this is not json", {}, 400, "bad_input"),
    ("invalid UTF-8", b'{"expression": "\xff"}', {}, 400, "bad_input"),
    ("huge power", b'{"expression": "9**9**9"}', {}, 400, "bad_input"),
    ("code injection", b'{"expression": "__import__(\\"os\\")"}', {}, 400, "bad_input"),
    ("wrong field type", b'{"expression": 42}', {}, 400, "bad_input"),
    ("missing field", b'{"expr": "6*7"}', {}, 400, "bad_input"),
    ("empty body", b"", {}, 400, "bad_input"),
    ("bad deadline header", b'{"expression": "1"}', {DEADLINE: "soon"}, 400, "bad_input"),
    ("bad task id header", b'{"expression": "1"}', {TASK_ID: "has spaces in it"}, 400, "bad_input"),
    (
        "above max_payload",
        json.dumps({"expression": "1+" * 1000 + "1"}).encode(),
        {},
        413,
        "too_large",
    ),
]


async def test_hostile_input_gets_error_replies_and_the_agent_keeps_serving(
    start_daemon: Callable[..., Daemon], prefix: str, nc: Client
) -> None:
    math_id = f"math-{new_agent_suffix()}"
    daemon = await start(
        start_daemon,
        [{"type": "math", "id": math_id}],
        prefix=prefix,
        max_payload=1000,
        heartbeat_interval=600.0,
    )
    pid = daemon.pid
    subject = f"{prefix}.task.math"
    seen: list[tuple[str, int, str]] = []
    for name, body, headers, _, _ in _HOSTILE:
        reply = await request(nc, subject, body, headers)
        assert reply.headers is not None, name
        assert reply.headers[AGENT_ID] == math_id, name
        assert reply.headers[ERROR], name
        error = json.loads(reply.data)["error"]
        assert str(error["code"]) == reply.headers[ERROR_CODE], name
        assert error["message"], name
        seen.append((name, error["code"], error["type"]))
    assert seen == [(name, code, kind) for name, _, _, code, kind in _HOSTILE]

    reply = await request(nc, subject, b'{"expression": "6*7"}')
    assert reply.data == b'{"value":42}'
    assert reply.headers is not None and reply.headers[AGENT_ID] == math_id
    assert daemon.proc.alive() and daemon.pid == pid, daemon.proc.output()


async def test_error_messages_name_what_is_wrong(
    start_daemon: Callable[..., Daemon], prefix: str, nc: Client
) -> None:
    daemon = await start(
        start_daemon,
        [{"type": "math", "id": f"math-{new_agent_suffix()}"}],
        prefix=prefix,
        max_payload=1000,
        heartbeat_interval=600.0,
    )
    subject = f"{prefix}.task.math"

    async def message_of(body: bytes, headers: dict[str, str] | None = None) -> str:
        reply = await request(nc, subject, body, headers)
        assert reply.headers is not None
        return reply.headers[ERROR]

    assert "not valid JSON" in await message_of(b"this is not json")
    assert "expression" in await message_of(b'{"expression": 42}')
    assert "too large" in await message_of(b'{"expression": "9**9**9"}')
    assert "function call" in await message_of(b'{"expression": "__import__(\\"os\\")"}')
    assert "Agent-Deadline" in await message_of(b'{"expression": "1"}', {DEADLINE: "soon"})
    big = json.dumps({"expression": "1+" * 1000 + "1"}).encode()
    assert f"payload of {len(big)} bytes" in await message_of(big)
    assert "limit of 1000 bytes" in await message_of(big)
    assert daemon.proc.alive(), daemon.proc.output()


# --- e. kill -9 ---------------------------------------------------------------------------


async def test_kill_9_of_one_replica_leaves_the_other_serving(
    start_daemon: Callable[..., Daemon], prefix: str, nc: Client
) -> None:
    suffix = new_agent_suffix()
    doomed_id, survivor_id = f"echo-a-{suffix}", f"echo-b-{suffix}"
    doomed = await start(
        start_daemon, [{"type": "echo", "id": doomed_id}], prefix=prefix, heartbeat_interval=600.0
    )
    survivor = await start(
        start_daemon, [{"type": "echo", "id": survivor_id}], prefix=prefix, heartbeat_interval=600.0
    )
    client = TaskClient(nc, prefix=prefix, default_timeout=10.0)
    for agent_id in (doomed_id, survivor_id):
        reply = await client.request("echo", {"to": agent_id}, agent_id=agent_id)
        assert reply.sender == agent_id

    await anyio.to_thread.run_sync(doomed.proc.kill)
    assert doomed.proc.popen.returncode == -signal.SIGKILL

    # The kernel closed the dead daemon's socket; wait until the server has seen it
    # (its direct address has no responders any more), so no task is routed to it.
    with anyio.fail_after(10):
        while True:
            try:
                await client.request("echo", None, agent_id=doomed_id, timeout=0.25)
            except NoAgentError:
                break
            except TaskTimeout:
                continue

    results: dict[int, Any] = {}

    async def send(n: int) -> None:
        reply = await client.request("echo", {"n": n})
        results[n] = (reply.payload, reply.sender)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for n in range(50):
                tg.start_soon(send, n)
    assert results == {n: ({"n": n}, survivor_id) for n in range(50)}
    assert survivor.proc.alive(), survivor.proc.output()


async def test_no_responders_is_immediate_after_the_last_agent_stops(
    start_daemon: Callable[..., Daemon], prefix: str, nc: Client
) -> None:
    daemon = await start(
        start_daemon,
        [{"type": "echo", "id": f"echo-{new_agent_suffix()}"}],
        prefix=prefix,
        heartbeat_interval=600.0,
    )
    daemon.proc.send_signal(signal.SIGTERM)
    assert await wait_exit(daemon.proc) == 0, daemon.proc.output()
    with pytest.raises(nats.errors.NoRespondersError):
        await nc.request(f"{prefix}.task.echo", b"{}", timeout=10)
