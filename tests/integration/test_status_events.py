"""Status events: one tagged family on <prefix>.status.<agent>.<state>."""

from __future__ import annotations

import anyio
import msgspec
import pytest
from nats.aio.client import Client

from actors import AgentHost, MathAgent
from bus import AgentError, TaskClient

pytestmark = pytest.mark.anyio


async def collect_until(
    sub: object, predicate: object, timeout: float = 5.0
) -> list[dict[str, object]]:
    events: list[dict[str, object]] = []
    with anyio.fail_after(timeout):
        async for msg in sub.messages:  # type: ignore[attr-defined]
            event = msgspec.json.decode(msg.data)
            assert msg.subject.endswith(f".{event['agent']}.{event['state']}")
            events.append(event)
            if predicate(events):  # type: ignore[operator]
                return events
    raise AssertionError("unreachable")


async def test_task_lifecycle_events(nc: Client, prefix: str) -> None:
    sub = await nc.subscribe(f"{prefix}.status.>")
    async with AgentHost(nc, [MathAgent("m-1")], prefix=prefix, heartbeat_interval=0.2):
        client = TaskClient(nc, prefix=prefix)
        await client.request("math", {"expression": "6*7"}, task_id="ok-1")
        with pytest.raises(AgentError):
            await client.request("math", {"expression": "1/0"}, task_id="bad-1")
        events = await collect_until(
            sub, lambda evs: sum(e["state"] == "heartbeat" for e in evs) >= 2
        )
    by_task = {(e.get("task_id"), e["state"]): e for e in events}
    online = next(e for e in events if e["state"] == "online")
    assert online["capabilities"] == ["math"]
    assert online["v"] == 1
    for state in ("accepted", "started", "completed"):
        assert by_task[("ok-1", state)]["capability"] == "math"
    assert by_task[("ok-1", "completed")]["elapsed_ms"] >= 0
    failed = by_task[("bad-1", "failed")]
    assert failed["error"]["code"] == 400
    heartbeat = next(e for e in events if e["state"] == "heartbeat")
    assert heartbeat["in_flight"] == 0 and heartbeat["max_concurrency"] == 64
    offline = await collect_until(sub, lambda evs: evs[-1]["state"] == "offline")
    assert offline[-1]["agent"] == "m-1"


async def test_only_failures_can_be_selected_by_subject(nc: Client, prefix: str) -> None:
    sub = await nc.subscribe(f"{prefix}.status.*.failed")
    async with AgentHost(nc, [MathAgent("m-1")], prefix=prefix):
        client = TaskClient(nc, prefix=prefix)
        await client.request("math", {"expression": "1"})
        with pytest.raises(AgentError):
            await client.request("math", {"expression": "("}, task_id="bad-2")
        msg = await sub.next_msg(timeout=5)
        assert msgspec.json.decode(msg.data)["task_id"] == "bad-2"
