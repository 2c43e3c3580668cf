"""Replicas of a capability share one queue group: each task reaches exactly one."""

from __future__ import annotations

import collections

import anyio
import pytest
from nats.aio.client import Client

from actors import AgentHost, EchoAgent
from bus import TaskClient

pytestmark = pytest.mark.anyio


async def test_two_replicas_share_the_load_and_each_task_is_answered_once(
    nc: Client, prefix: str
) -> None:
    async with AgentHost(nc, [EchoAgent("e-1"), EchoAgent("e-2")], prefix=prefix) as host:
        client = TaskClient(nc, prefix=prefix)
        by_agent: collections.Counter[str] = collections.Counter()
        in_flight = anyio.CapacityLimiter(50)  # below the 2 x 64 the replicas accept

        async def send(n: int) -> None:
            async with in_flight:
                reply = await client.request("echo", {"n": n, "delay_ms": 5})
            assert reply.payload == {"n": n, "delay_ms": 5}
            by_agent[reply.sender] += 1

        async with anyio.create_task_group() as tg:
            for n in range(200):
                tg.start_soon(send, n)
        assert sum(by_agent.values()) == 200
        assert set(by_agent) == {"e-1", "e-2"}
        assert min(by_agent.values()) >= 40, by_agent
        counted = sum(r.counters["echo"].num_requests for r in host.runners.values())
        assert counted == 200
