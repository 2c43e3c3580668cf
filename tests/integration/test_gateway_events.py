"""The gateway relays a task's status events only from the agent that serves it: an
event is believed by the subject it came on, never by what its body claims.
"""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
import pytest
from gateway_support import StepsAgent
from nats.aio.client import Client
from prometheus_client import CollectorRegistry

from actors import AgentHost, EchoAgent
from bus import Accepted, Progress, Started, now_ms
from bus import connect as bus_connect
from orchestrator.gateway import ExposedCapability, Gateway, GatewayConfig, NotExposed
from orchestrator.gateway._events import RelayedEvent
from orchestrator.gateway._metrics import GatewayMetrics

pytestmark = pytest.mark.anyio


def progress(agent: str, task_id: str, message: str) -> bytes:
    event = Progress(agent=agent, ts=now_ms() / 1000, task_id=task_id, capability="steps",
                     message=message)  # fmt: skip
    return msgspec.json.encode(event)


async def test_spoofed_progress_is_dropped_and_counted(
    nc: Client, nats_url: str, prefix: str
) -> None:
    steps = StepsAgent("steps-1")
    config = GatewayConfig(
        prefix=prefix, capabilities={"steps": ExposedCapability(), "echo": ExposedCapability()}
    )
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    seen: list[RelayedEvent] = []
    started = anyio.Event()
    genuine = anyio.Event()

    async def on_event(event: RelayedEvent) -> None:
        seen.append(event)
        if isinstance(event, Started):
            started.set()
        if isinstance(event, Progress) and event.message == "genuine":
            genuine.set()

    async with (
        AgentHost(nc, [steps, EchoAgent("echo-1")], prefix=prefix),
        bus_connect(nats_url, name="gateway-test") as gateway_nc,
        Gateway(gateway_nc, config, metrics=metrics) as gateway,
    ):
        result: list[Any] = []

        async def call() -> None:
            payload = {"count": 0, "hold": True}
            result.append(
                await gateway.call(
                    "steps", payload, protocol="test", task_id="t-spoof", on_event=on_event
                )
            )

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await started.wait()
                # from the agent host's connection, so they reach the gateway in this order:
                # an agent that does not serve the capability (echo-1), a body that names
                # the serving agent on another's subject, then a genuine event
                status = f"{prefix}.status"
                await nc.publish(f"{status}.echo-1.progress", progress("echo-1", "t-spoof", "a"))
                await nc.publish(f"{status}.echo-1.progress", progress("steps-1", "t-spoof", "b"))
                await nc.publish(f"{status}.steps-1.started", progress("steps-1", "t-spoof", "c"))
                await nc.publish(
                    f"{status}.steps-1.progress", progress("steps-1", "t-spoof", "genuine")
                )
                await genuine.wait()
                steps.released.set()
        with pytest.raises(NotExposed, match="does not offer"):
            await gateway.call("math", {}, protocol="test")
    assert result == [{"done": 0}]
    assert [type(e) for e in seen] == [Accepted, Started, Progress]
    assert (
        registry.get_sample_value("callboard_gateway_dropped_events_total", {"reason": "spoofed"})
        == 3
    )
    assert (
        registry.get_sample_value(
            "callboard_gateway_calls_total",
            {"protocol": "test", "capability": "other", "outcome": "not_exposed"},
        )
        == 1
    )
