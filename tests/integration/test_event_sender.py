"""Every task event names the task's sender: what its ``Agent-Sender`` claims.

``accepted`` always did; ``started``, ``progress``, ``completed``, ``failed`` and
``cancelled`` (and the ``failed`` of a refused task) were empty. A long name is
cut, so that the event still fits the server's max_payload.
"""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from actors import Agent, AgentHost, Capability, MathAgent, current_context
from actors._status import MAX_SENDER
from bus import AgentError, AgentMessage, TaskClient
from bus.codec import SENDER, TASK_ID

pytestmark = pytest.mark.anyio

SENDER_NAME = "planner-7 (a claim)"


class ReportingAgent(Agent):
    """Reports progress once, then answers; ``{"wait": true}`` waits to be cancelled."""

    kind = "reporter"
    capabilities = (Capability(name="report", description="Report progress, then answer."),)
    max_concurrency = 1

    async def handle(self, task: AgentMessage) -> Any:
        await current_context().progress("halfway")
        if task.payload.get("wait"):
            await anyio.sleep_forever()
        return {"ok": True}


class Events:
    def __init__(self) -> None:
        self.by_task: dict[tuple[str, str], dict[str, Any]] = {}
        self.changed = anyio.Event()

    async def on_message(self, msg: Msg) -> None:
        event = msgspec.json.decode(msg.data)
        if "task_id" in event:
            self.by_task[(event["task_id"], event["state"])] = event
            changed, self.changed = self.changed, anyio.Event()
            changed.set()

    async def wait(self, task_id: str, state: str) -> dict[str, Any]:
        with anyio.fail_after(10):
            while (task_id, state) not in self.by_task:
                await self.changed.wait()
        return self.by_task[(task_id, state)]


async def test_every_task_event_names_the_claimed_sender(nc: Client, prefix: str) -> None:
    events = Events()
    await nc.subscribe(f"{prefix}.status.>", cb=events.on_message)
    await nc.flush()
    client = TaskClient(nc, prefix=prefix, sender=SENDER_NAME)
    async with AgentHost(nc, [MathAgent("m-1"), ReportingAgent("r-1")], prefix=prefix):
        await client.request("math", {"expression": "6*7"}, task_id="ok-1")
        with pytest.raises(AgentError):
            await client.request("math", {"expression": "1/0"}, task_id="bad-1")
        await client.request("report", {}, task_id="rep-1")

        async with anyio.create_task_group() as tg:

            async def waiting() -> None:
                with pytest.raises(AgentError):
                    await client.request("report", {"wait": True}, task_id="cut-1", timeout=10)

            tg.start_soon(waiting)
            await events.wait("cut-1", "progress")
            # the agent's one slot is taken: this one is refused with 503
            with pytest.raises(AgentError) as refused:
                await client.request("report", {}, task_id="refused-1")
            assert refused.value.code == 503
            await client.cancel("cut-1")

        # no Agent-Sender at all: shown as anonymous, as accepted always did
        reply = await nc.request(
            f"{prefix}.task.math", b'{"expression": "1"}', headers={TASK_ID: "anon-1"}, timeout=10
        )
        assert reply.data == b'{"value":1}'
        await nc.request(
            f"{prefix}.task.math",
            b'{"expression": "2"}',
            headers={TASK_ID: "long-1", SENDER: "x" * 5000},
            timeout=10,
        )

        expected = {
            "ok-1": ("accepted", "started", "completed"),
            "bad-1": ("accepted", "started", "failed"),
            "rep-1": ("accepted", "started", "progress", "completed"),
            "cut-1": ("accepted", "started", "progress", "cancelled"),
            "refused-1": ("failed",),
        }
        for task_id, states in expected.items():
            for state in states:
                event = await events.wait(task_id, state)
                assert event["sender"] == SENDER_NAME, (task_id, state, event)
        for state in ("accepted", "started", "completed"):
            assert (await events.wait("anon-1", state))["sender"] == "anonymous"
            assert (await events.wait("long-1", state))["sender"] == "x" * MAX_SENDER
