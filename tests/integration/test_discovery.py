"""NATS micro discovery: $SRV.PING/INFO/STATS list agents and count every error."""

from __future__ import annotations

import msgspec
import pytest
from nats.aio.client import Client

from actors import AgentHost, EchoAgent, MathAgent
from bus import AgentError, TaskClient
from bus.micro import ServiceInfo, ServicePing, ServiceStats, collect_replies, service_id
from orchestrator import Orchestrator

pytestmark = pytest.mark.anyio


async def test_info_lists_agents_and_their_capability_subjects(nc: Client, prefix: str) -> None:
    async with AgentHost(nc, [MathAgent("m-1"), EchoAgent("e-1")], prefix=prefix):
        infos = [
            msgspec.json.decode(data, type=ServiceInfo)
            async for data in collect_replies(nc, "$SRV.INFO.math", wait=0.3)
        ]
        mine = [i for i in infos if i.metadata and i.metadata["agent_id"] == "m-1"]
        assert len(mine) == 1
        info = mine[0]
        assert info.id == service_id("m-1", prefix) == f"m-1@{prefix.replace('.', '~')}"
        assert info.name == "math"
        assert info.type == "io.nats.micro.v1.info_response"
        (endpoint,) = info.endpoints
        assert endpoint.name == "math"
        assert endpoint.subject == f"{prefix}.task.math"
        assert endpoint.queue_group == "callboard"
        assert endpoint.metadata is not None
        schema = msgspec.json.decode(endpoint.metadata["input_schema"])
        assert "expression" in str(schema)
        pings = [
            msgspec.json.decode(d, type=ServicePing)
            async for d in collect_replies(
                nc, f"$SRV.PING.echo.{service_id('e-1', prefix)}", wait=0.3
            )
        ]
        assert [p.id for p in pings] == [service_id("e-1", prefix)]


async def test_stats_count_requests_and_every_error_reply(nc: Client, prefix: str) -> None:
    async with AgentHost(nc, [MathAgent("m-1")], prefix=prefix):
        client = TaskClient(nc, prefix=prefix)
        await client.request("math", {"expression": "6*7"})
        for bad in ({"expression": "1/0"}, {"nope": 1}):
            with pytest.raises(AgentError):
                await client.request("math", bad)
        await nc.request(f"{prefix}.task.math", b"garbage", timeout=5)
        stats_subject = f"$SRV.STATS.math.{service_id('m-1', prefix)}"
        (data,) = [d async for d in collect_replies(nc, stats_subject, wait=0.3)]
        stats = msgspec.json.decode(data, type=ServiceStats)
        (endpoint,) = stats.endpoints
        assert endpoint.num_requests == 4
        assert endpoint.num_errors == 3
        assert "JSON" in endpoint.last_error
        assert endpoint.processing_time > 0
        assert stats.started.endswith("Z")


async def test_orchestrator_discovers_and_finds_agents(nc: Client, prefix: str) -> None:
    other_prefix = prefix + "x"
    async with (
        AgentHost(nc, [MathAgent("m-1"), EchoAgent("e-1")], prefix=prefix),
        AgentHost(nc, [MathAgent("foreign-1")], prefix=other_prefix),
    ):
        orch = Orchestrator(nc, prefix=prefix)
        found = await orch.discover(wait=0.3)
        assert [a.id for a in found] == ["e-1", "m-1"]
        agent = await orch.find_agent("math")
        assert agent is not None and agent.id == "m-1"
        assert "calculate" in agent.keywords["math"]
        assert agent.max_concurrency == 64
        assert await orch.find_agent("translate") is None
