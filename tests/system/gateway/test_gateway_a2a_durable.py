"""A2A tasks of durable capabilities are durable records: ``a2a-sdk``'s client
against a real gateway process and a real ``callboard run`` daemon with ``[durable]``.

The gateway is restarted between the calls: what ``tasks/get`` and ``tasks/cancel``
answer comes from the task's record in the JetStream bucket, not from the memory of
the gateway that took the message.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from a2a.types import (
    DataPart,
    Message,
    Part,
    Role,
    TaskIdParams,
    TaskQueryParams,
    TaskState,
    TaskStatusUpdateEvent,
)
from gateway_support import GATEWAY_READY, TOKEN_ENV, Running, gateway_url, new_token
from mcp import types
from mcp.shared.exceptions import McpError
from nats.aio.client import Client
from system_support import Daemon, Proc, watch_status
from test_gateway_a2a import a2a_client, data_of, final_task, status_data
from test_gateway_mcp import http_session

from bus import new_agent_suffix
from bus.durable import DurableNames, DurableSettings, DurableTaskClient, ensure_durable
from bus.durable import TaskState as RecordState

pytestmark = [pytest.mark.anyio, pytest.mark.system]

DURABLE = {"storage": "memory", "ack_wait": 30.0, "retry_delay": 0.2}


@pytest.fixture
def durable_daemon(start_daemon: Callable[..., Daemon], prefix: str) -> Daemon:
    suffix = new_agent_suffix()
    return start_daemon(
        [{"type": "math", "id": f"math-{suffix}"}, {"type": "echo", "id": f"echo-{suffix}"}],
        prefix=prefix,
        durable=DURABLE,
        heartbeat_interval=60.0,
    )


@pytest.fixture
def start_gateway(
    tmp_path: Path,
    prefix: str,
    nats_url: str,
    cli_env: dict[str, str],
    callboard_cmd: list[str],
    procs: Callable[..., Proc],
) -> Callable[[], Running]:
    """Start a gateway exposing math and echo as durable capabilities; each one
    started by this fixture has the same token (as replicas and restarts do)."""
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'prefix = "{prefix}"\nhttp_address = "127.0.0.1:0"\ndurable = true\n'
        f'[nats]\nurl = "{nats_url}"\n[capabilities.math]\n[capabilities.echo]\n'
    )
    token = new_token()

    def start() -> Running:
        env = {**cli_env, TOKEN_ENV: token}
        proc = procs([*callboard_cmd, "gateway", str(config)], env=env, name="gateway")
        line = proc.stderr.wait_for(GATEWAY_READY)
        return Running(gateway_url(line), token, proc)

    return start


def message(skill: str, data: dict[str, Any]) -> Message:
    return Message(
        role=Role.user,
        parts=[Part(root=DataPart(data=data))],
        message_id=uuid.uuid4().hex,
        metadata={"skill": skill},
    )


async def test_a_completed_task_is_read_from_its_record_after_a_gateway_restart(
    durable_daemon: Daemon, start_gateway: Callable[[], Running], nc: Client, prefix: str
) -> None:
    first = await anyio.to_thread.run_sync(start_gateway)
    async with a2a_client(first, streaming=False) as (_card, client):
        with anyio.fail_after(30):
            sent = await final_task(client, message("math", {"expression": "6*7"}))
    assert sent.status.state == TaskState.completed, sent
    assert data_of(sent) == {"value": 42}
    record = await DurableTaskClient(nc, prefix=prefix).record(sent.id, capability="math")
    assert record.state == RecordState.COMPLETED  # the A2A task id is the durable task's

    await anyio.to_thread.run_sync(first.proc.stop)
    second = await anyio.to_thread.run_sync(start_gateway)
    async with a2a_client(second) as (_card, client):
        with anyio.fail_after(30):
            stored = await client.get_task(TaskQueryParams(id=sent.id))
    assert stored.status.state == TaskState.completed, stored
    assert data_of(stored) == {"value": 42}
    assert (stored.metadata or {}).get("skill") == "math"


async def test_a_long_durable_task_is_cancelled_through_another_gateway_run(
    durable_daemon: Daemon, start_gateway: Callable[[], Running], nc: Client, prefix: str
) -> None:
    first = await anyio.to_thread.run_sync(start_gateway)
    async with a2a_client(first) as (_card, client):
        with anyio.fail_after(30):
            async for task, update in client.send_message(  # type: ignore[misc]
                message("echo", {"input": {"n": 1, "delay_ms": 60_000}})
            ):
                if isinstance(update, TaskStatusUpdateEvent) and update.status.message:
                    if status_data(task).get("state") == "started":
                        break
    await anyio.to_thread.run_sync(first.proc.stop)

    second = await anyio.to_thread.run_sync(start_gateway)
    durable = DurableTaskClient(nc, prefix=prefix)
    async with a2a_client(second) as (_card, client):
        with anyio.fail_after(30):
            running = await client.get_task(TaskQueryParams(id=task.id))
            assert running.status.state == TaskState.working, running
            cancelled = await client.cancel_task(TaskIdParams(id=task.id))
            record = await durable.wait(task.id, 20, capability="echo")
            stored = await client.get_task(TaskQueryParams(id=task.id))
    assert cancelled.status.state == TaskState.canceled
    assert record.state == RecordState.CANCELLED  # the agent stopped it: callboard's cancel
    assert stored.status.state == TaskState.canceled


async def test_a_durable_task_past_its_deadline_stays_working_and_completes_later(
    durable_daemon: Daemon, start_gateway: Callable[[], Running], nc: Client, prefix: str
) -> None:
    """A core task past its deadline fails; a durable one goes on, and tasks/get says so."""
    running = await anyio.to_thread.run_sync(start_gateway)
    request = message("echo", {"input": {"n": 2, "delay_ms": 3000}})
    request.metadata = {"skill": "echo", "timeout": 1}
    async with a2a_client(running, streaming=False) as (_card, client):
        with anyio.fail_after(30):
            sent = await final_task(client, request)
            assert sent.status.state == TaskState.working, sent
            record = await DurableTaskClient(nc, prefix=prefix).wait(sent.id, 20, capability="echo")
            stored = await client.get_task(TaskQueryParams(id=sent.id))
    assert record.state == RecordState.COMPLETED
    assert stored.status.state == TaskState.completed, stored
    assert data_of(stored) == {"n": 2, "delay_ms": 3000}


async def test_an_mcp_cancel_of_a_durable_tool_call_cancels_the_task(
    durable_daemon: Daemon, start_gateway: Callable[[], Running], nc: Client, prefix: str
) -> None:
    """A durable wait sends no cancel of its own: the gateway sends callboard's."""
    running = await anyio.to_thread.run_sync(start_gateway)
    failures: list[BaseException] = []
    async with watch_status(nc, prefix) as watch, http_session(running) as session:

        async def call() -> None:
            try:
                await session.call_tool("echo", {"input": {"n": 3, "delay_ms": 60_000}})
            except McpError as exc:
                failures.append(exc)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                started = await watch.wait_for(lambda e: e.get("state") == "started", 20)
                request_id = session._request_id - 1  # the call: the last request sent
                cancel = types.CancelledNotification(
                    params=types.CancelledNotificationParams(requestId=request_id, reason="no")
                )
                await session.send_notification(types.ClientNotification(cancel))
                durable = DurableTaskClient(nc, prefix=prefix)
                record = await durable.wait(started["task_id"], 20, capability="echo")
                tg.cancel_scope.cancel()  # the call itself gets no answer once cancelled
    assert record.state == RecordState.CANCELLED, record


async def test_a2a_cancel_of_a_queued_durable_task_keeps_it_from_ever_running(
    start_daemon: Callable[..., Daemon],
    start_gateway: Callable[[], Running],
    nc: Client,
    prefix: str,
) -> None:
    """No agent takes durable echo tasks yet (a core-only daemon makes echo live for
    the catalog): the task waits in the queue; tasks/cancel must keep it from running
    when a durable daemon starts later."""
    names = DurableNames(prefix)
    settings = DurableSettings(storage="memory", ack_wait=30.0, retry_delay=0.2)  # DURABLE
    await ensure_durable(nc.jetstream(), names, settings, update=True)
    start_daemon([{"type": "echo", "id": f"echo-{new_agent_suffix()}"}], prefix=prefix)
    running = await anyio.to_thread.run_sync(start_gateway)
    request = message("echo", {"input": {"n": 4}})
    request.metadata = {"skill": "echo", "timeout": 1}
    durable = DurableTaskClient(nc, prefix=prefix)
    async with a2a_client(running, streaming=False) as (_card, client):
        with anyio.fail_after(30):
            sent = await final_task(client, request)
            assert sent.status.state == TaskState.working, sent  # queued, past the deadline
            assert (await durable.record(sent.id, capability="echo")).state == "submitted"
            cancelled = await client.cancel_task(TaskIdParams(id=sent.id))
            assert cancelled.status.state == TaskState.canceled
            stored = await client.get_task(TaskQueryParams(id=sent.id))
            assert stored.status.state == TaskState.canceled, stored
    assert (await durable.record(sent.id, capability="echo")).state == RecordState.CANCELLED

    record_key = names.key_subject(names.record_key("echo", sent.id))
    written = await nc.subscribe(record_key)
    async with watch_status(nc, prefix) as watch:
        start_daemon(
            [{"type": "echo", "id": f"echo-{new_agent_suffix()}"}], prefix=prefix, durable=DURABLE
        )
        with anyio.fail_after(30):
            while (state := json.loads((await written.next_msg(30)).data)["state"]) != "cancelled":
                assert state == "working", state
            await watch.wait_for(
                lambda e: e.get("state") == "cancelled" and e.get("task_id") == sent.id, 20
            )
    assert not [
        e for e in watch.events if e.get("task_id") == sent.id and e["state"] != "cancelled"
    ]
    history = [r.state for r in await durable.history(sent.id, capability="echo")]
    assert history == ["submitted", "working", "cancelled"], history
