"""A malformed message costs one dropped (and counted) message, never the read loop.

Any client may publish a message whose reply subject (or subject) is not
UTF-8. nats-py's read loop died on it (``UnicodeDecodeError``) in every
subscriber, which then heard nothing until the stale-connection check
reconnected it (~60 s). These frames are sent from a raw TCP socket, the way
an attacker would, to a real nats-server.
"""

from __future__ import annotations

import anyio
import pytest
from nats.aio.client import Client
from prometheus_client import CollectorRegistry
from refusal_support import exactly, raw_client, refusals, send_and_confirm

from actors import AgentHost, MathAgent
from bus import AgentMetrics, ConnectionMetrics, MetricsServer, StatusEvent, connect
from bus.codec import decode_json
from orchestrator import Orchestrator

pytestmark = pytest.mark.anyio


async def test_a_reply_subject_that_is_not_utf8_does_not_deafen_an_agent(
    nats_url: str, prefix: str
) -> None:
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry)
    connections = ConnectionMetrics(registry, refusals=metrics.refusals)
    async with (
        MetricsServer("127.0.0.1:0", registry) as server,
        connect(nats_url, name="malformed-agent", metrics=connections) as agent_nc,
        connect(nats_url, name="malformed-caller") as caller_nc,
        AgentHost(agent_nc, [MathAgent("m-1")], prefix=prefix, metrics=metrics),
    ):
        orch = Orchestrator(caller_nc, prefix=prefix)
        stream = await raw_client(nats_url)
        async with stream:
            await send_and_confirm(
                stream,
                f"PUB {prefix}.task.math ".encode() + b"\xff 2\r\n{}\r\n"
                b"PUB $SRV.PING \xfe 0\r\n\r\n",
            )
            with anyio.fail_after(5):
                assert await orch.dispatch("math", {"expression": "6*7"}, timeout=4) == {
                    "value": 42
                }
        assert getattr(agent_nc, "malformed_messages", 0) == 2
        # counted where an operator sees it (the read loop counted them before the reply)
        assert await refusals(server.url) == exactly({"malformed_frame": 2})
        # and it goes on serving; what it serves is not counted as refused
        for n in range(5):
            assert await orch.dispatch("math", {"expression": f"{n}+1"}, timeout=4) == {
                "value": n + 1
            }
        assert await refusals(server.url) == exactly({"malformed_frame": 2})


async def test_a_status_subscriber_survives_malformed_subjects(
    nc: Client, nats_url: str, prefix: str
) -> None:
    events: list[StatusEvent] = []
    arrived = anyio.Event()
    sub = await nc.subscribe(f"{prefix}.status.>")
    stream = await raw_client(nats_url)
    async with stream:
        await send_and_confirm(
            stream,
            f"PUB {prefix}.status.a-1.online ".encode()
            + b"\xff 2\r\n{}\r\n"
            + f"PUB {prefix}.status.".encode()
            + b"\xc3\x28.online 2\r\n{}\r\n",
        )
    async with AgentHost(nc, [MathAgent("a-2")], prefix=prefix):
        with anyio.fail_after(5):
            async for msg in sub.messages:
                event = decode_json(msg.data)
                events.append(event)
                if event.get("state") == "online" and event.get("agent") == "a-2":
                    arrived.set()
                    break
    await sub.unsubscribe()
    assert arrived.is_set()
    assert getattr(nc, "malformed_messages", 0) == 2
