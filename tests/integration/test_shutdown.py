"""Graceful shutdown: stop intake, finish in-flight tasks, cancel past the grace period."""

from __future__ import annotations

import time

import anyio
import msgspec
import pytest
from nats.aio.client import Client

from actors import AgentHost, EchoAgent
from bus import AgentOverloaded, TaskClient

pytestmark = pytest.mark.anyio


async def test_a_task_in_flight_finishes_during_shutdown(nc: Client, prefix: str) -> None:
    client = TaskClient(nc, prefix=prefix)
    started = await nc.subscribe(f"{prefix}.status.e-1.started")
    offline = await nc.subscribe(f"{prefix}.status.e-1.offline")
    results: list[object] = []

    async def slow_task() -> None:
        results.append((await client.request("echo", {"delay_ms": 500})).payload)

    async with anyio.create_task_group() as tg:
        async with AgentHost(nc, [EchoAgent("e-1")], prefix=prefix, grace_period=10):
            tg.start_soon(slow_task)
            await started.next_msg(timeout=5)
        # the host has exited: the task must already have its reply
        assert results == [{"delay_ms": 500}]
    event = msgspec.json.decode((await offline.next_msg(timeout=5)).data)
    assert event["state"] == "offline"


async def test_past_the_grace_period_tasks_get_a_503(nc: Client, prefix: str) -> None:
    client = TaskClient(nc, prefix=prefix)
    started = await nc.subscribe(f"{prefix}.status.e-1.started")
    errors: list[AgentOverloaded] = []

    async def slow_task() -> None:
        try:
            await client.request("echo", {"delay_ms": 30_000}, timeout=60)
        except AgentOverloaded as exc:
            errors.append(exc)

    begun = time.monotonic()
    async with anyio.create_task_group() as tg:
        async with AgentHost(nc, [EchoAgent("e-1")], prefix=prefix, grace_period=0.3):
            tg.start_soon(slow_task)
            await started.next_msg(timeout=5)
    assert time.monotonic() - begun < 10
    assert len(errors) == 1
    assert errors[0].type == "draining"
    assert "shut down" in errors[0].message


async def test_remove_one_agent_while_the_others_serve(nc: Client, prefix: str) -> None:
    client = TaskClient(nc, prefix=prefix)
    async with AgentHost(nc, [EchoAgent("e-1"), EchoAgent("e-2")], prefix=prefix) as host:
        await host.remove("e-1")
        for _ in range(10):
            assert (await client.request("echo", 1)).sender == "e-2"
        await host.add(EchoAgent("e-3"))
        senders = {(await client.request("echo", 1)).sender for _ in range(40)}
        assert senders == {"e-2", "e-3"}


class ClosingEcho(EchoAgent):
    """Records when the host lets it release its resources."""

    def __init__(self, agent_id: str) -> None:
        super().__init__(agent_id)
        self.closed_after: list[int] = []  # in-flight count of its host when closed
        self.host: AgentHost | None = None

    async def aclose(self) -> None:
        assert self.host is not None
        self.closed_after.append(self.host.in_flight)


async def test_the_host_closes_each_agent_once_it_has_stopped(nc: Client, prefix: str) -> None:
    removed, stopped = ClosingEcho("e-removed"), ClosingEcho("e-stopped")
    async with AgentHost(nc, [removed, stopped], prefix=prefix) as host:
        removed.host = stopped.host = host
        await host.remove("e-removed")
        assert (removed.closed_after, stopped.closed_after) == ([0], [])
    assert (removed.closed_after, stopped.closed_after) == ([0], [0])
