"""A capability whose queue outgrows its budget refuses with 503 at once.

An agent whose handler holds the event loop (it never awaits) runs its tasks one
after another: a burst queues up in front of it. Beyond the queue's budget what
is taken off is refused with a 503 (a tiny reply) instead of run, so the burst
drains fast and nothing is dropped unanswered; another agent on the same
connection answers meanwhile.
"""

from __future__ import annotations

import collections
import time

import anyio
import pytest
from nats.aio.client import Client

from actors import Agent, AgentHost, Capability, MathAgent
from actors._core_intake import CoreIntake
from bus import AgentMessage, AgentOverloaded, TaskClient

pytestmark = pytest.mark.anyio

BURST = 400
BUDGET = 20
"""Messages the capability's queue may hold in this test."""
HOLD_S = 0.005
"""Seconds each task holds the event loop."""


class HoggingAgent(Agent):
    """Holds the event loop for ``HOLD_S`` per task: a CPU-bound handler."""

    kind = "hog"
    capabilities = (Capability(name="hog", description="Hold the event loop."),)

    async def handle(self, task: AgentMessage) -> object:
        time.sleep(HOLD_S)  # noqa: ASYNC251 - holding the loop is the point
        return task.payload


async def test_a_burst_beyond_the_queue_budget_is_refused_with_503(
    nc: Client, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(CoreIntake, "queued_messages_budget", BUDGET)
    outcomes: collections.Counter[str] = collections.Counter()
    messages: set[str] = set()
    client = TaskClient(nc, prefix=prefix)

    async def hog(n: int) -> None:
        try:
            await client.request("hog", {"n": n}, timeout=60)
        except AgentOverloaded as exc:
            outcomes["503"] += 1
            messages.add(exc.message)
        else:
            outcomes["result"] += 1

    async with AgentHost(nc, [HoggingAgent("hog-1"), MathAgent("m-1")], prefix=prefix):
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for n in range(BURST):
                    tg.start_soon(hog, n)
            reply = await client.request("math", {"expression": "6*7"}, timeout=10)
    assert reply.payload == {"value": 42}
    assert sum(outcomes.values()) == BURST, outcomes
    assert outcomes["503"] > 0 and outcomes["result"] >= BUDGET, outcomes
    assert all("'hog' tasks queued" in message for message in messages), messages
    print(f"\nburst of {BURST} on a queue budget of {BUDGET}: {dict(outcomes)}")
