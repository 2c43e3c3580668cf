"""Delegation between agents: chains, cycles and depth fail fast with 409."""

from __future__ import annotations

import time
from typing import Any

import pytest
from nats.aio.client import Client

from actors import Agent, AgentHost, MathAgent
from bus import AgentMessage, DelegationError, TaskClient

pytestmark = pytest.mark.anyio


class Relay(Agent):
    """Delegates its payload's expression to ``target`` and returns the value."""

    kind = "relay"

    def __init__(self, agent_id: str, capability: str, target: str) -> None:
        super().__init__(agent_id, capabilities=[capability])
        self.target = target

    async def handle(self, task: AgentMessage) -> Any:
        return await self.context.delegate(self.target, task.payload)


async def test_an_agent_delegates_to_another(nc: Client, prefix: str) -> None:
    async with AgentHost(nc, [Relay("r-1", "ask", "math"), MathAgent("m-1")], prefix=prefix):
        reply = await TaskClient(nc, prefix=prefix).request("ask", {"expression": "6*7"})
        assert reply.payload == {"value": 42}
        assert reply.sender == "r-1"


async def test_a_cycle_is_refused_with_409_at_once(nc: Client, prefix: str) -> None:
    agents = [Relay("a-1", "a", "b"), Relay("b-1", "b", "a")]
    async with AgentHost(nc, agents, prefix=prefix):
        client = TaskClient(nc, prefix=prefix)
        started = time.monotonic()
        with pytest.raises(DelegationError, match="delegation cycle") as info:
            await client.request("a", {"x": 1}, timeout=10)
        assert time.monotonic() - started < 2
        assert info.value.code == 409
        assert "a-1 -> b-1 -> a-1" in info.value.message


async def test_a_chain_deeper_than_the_limit_is_refused(nc: Client, prefix: str) -> None:
    agents: list[Agent] = [Relay(f"r{i}", f"c{i}", f"c{i + 1}") for i in range(1, 9)]
    agents.append(MathAgent("m-9", capabilities=["c9"]))
    async with AgentHost(nc, agents, prefix=prefix):
        client = TaskClient(nc, prefix=prefix)
        with pytest.raises(DelegationError, match="delegation too deep"):
            await client.request("c1", {"expression": "1"}, timeout=10)
        # eight agents are within the limit
        assert (await client.request("c2", {"expression": "1"})).payload == {"value": 1}
