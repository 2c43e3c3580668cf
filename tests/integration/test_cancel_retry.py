"""Cancellation reaches the agent (through delegation), deadlines shrink, retries."""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
import pytest
from nats.aio.client import Client
from nats.aio.subscription import Subscription

from actors import Agent, AgentHost, EchoAgent, MathAgent
from bus import AgentError, AgentMessage, TaskTimeout
from orchestrator import Orchestrator, RetryPolicy

pytestmark = pytest.mark.anyio


class Relay(Agent):
    kind = "relay"
    capabilities = ("relay",)

    async def handle(self, task: AgentMessage) -> Any:
        return await self.context.delegate("echo", task.payload)


async def next_event(sub: Subscription, timeout: float = 5.0) -> dict[str, Any]:
    msg = await sub.next_msg(timeout=timeout)
    event: dict[str, Any] = msgspec.json.decode(msg.data)
    return event


async def test_a_timed_out_task_stops_on_the_agent_and_frees_its_slot(
    nc: Client, prefix: str
) -> None:
    ended = await nc.subscribe(f"{prefix}.status.e-1.failed")
    async with AgentHost(nc, [EchoAgent("e-1", max_concurrency=1)], prefix=prefix) as host:
        orch = Orchestrator(nc, prefix=prefix)
        with pytest.raises(TaskTimeout):
            await orch.dispatch("echo", {"delay_ms": 30_000}, timeout=0.3, task_id="long-1")
        event = await next_event(ended)
        # the task carried the caller's deadline, so the agent cut it at the same moment
        assert (event["task_id"], event["error"]["code"]) == ("long-1", 408)
        assert event["elapsed_ms"] < 2000
        assert host.in_flight == 0
        # the one slot is free again: the next task is served, not refused with 503
        assert await orch.dispatch("echo", {"x": 1}, timeout=5) == {"x": 1}


async def test_a_caller_that_cancels_stops_the_agent(nc: Client, prefix: str) -> None:
    started = await nc.subscribe(f"{prefix}.status.e-1.started")
    cancelled = await nc.subscribe(f"{prefix}.status.e-1.cancelled")
    async with AgentHost(nc, [EchoAgent("e-1")], prefix=prefix):
        orch = Orchestrator(nc, prefix=prefix)
        async with anyio.create_task_group() as tg:
            tg.start_soon(orch.dispatch, "echo", {"delay_ms": 30_000})
            await next_event(started)
            tg.cancel_scope.cancel()
        event = await next_event(cancelled)
        assert event["reason"] == "the caller cancelled the task"


async def test_cancellation_cascades_to_delegated_sub_tasks(nc: Client, prefix: str) -> None:
    echo_started = await nc.subscribe(f"{prefix}.status.e-1.started")
    cancelled = await nc.subscribe(f"{prefix}.status.*.cancelled")
    async with AgentHost(nc, [Relay("r-1"), EchoAgent("e-1")], prefix=prefix) as host:
        orch = Orchestrator(nc, prefix=prefix)
        async with anyio.create_task_group() as tg:
            tg.start_soon(orch.dispatch, "relay", {"delay_ms": 30_000})
            await next_event(echo_started)
            tg.cancel_scope.cancel()
        agents = {(await next_event(cancelled))["agent"] for _ in range(2)}
        assert agents == {"r-1", "e-1"}
        assert host.in_flight == 0


async def test_a_sub_task_never_outlives_its_parent(nc: Client, prefix: str) -> None:
    ended = await nc.subscribe(f"{prefix}.status.e-1.*")
    async with AgentHost(nc, [Relay("r-1"), EchoAgent("e-1")], prefix=prefix):
        orch = Orchestrator(nc, prefix=prefix)
        with pytest.raises((TaskTimeout, AgentError)):
            await orch.dispatch("relay", {"delay_ms": 30_000}, timeout=1.0)
        with anyio.fail_after(5):
            while (event := await next_event(ended))["state"] not in ("failed", "cancelled"):
                pass
        # the echo agent's default timeout is 60 s: it was cut at the parent's ~1 s
        assert event["elapsed_ms"] < 2500


async def test_overload_is_retried_with_the_same_task_id(nc: Client, prefix: str) -> None:
    accepted = await nc.subscribe(f"{prefix}.status.e-1.accepted")
    async with AgentHost(nc, [EchoAgent("e-1", max_concurrency=1)], prefix=prefix):
        orch = Orchestrator(nc, prefix=prefix)
        policy = RetryPolicy(attempts=50, backoff=0.02, max_backoff=0.1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(orch.dispatch, "echo", {"delay_ms": 300})
            await next_event(accepted)
            reply = await orch.request("echo", {"x": 2}, retry=policy, task_id="retried-1")
        assert reply.payload == {"x": 2}
        assert reply.task_id == "retried-1"
        assert orch.retries >= 1


async def test_bad_input_is_never_retried(nc: Client, prefix: str) -> None:
    async with AgentHost(nc, [MathAgent("m-1")], prefix=prefix):
        orch = Orchestrator(nc, prefix=prefix, retry=RetryPolicy(attempts=5))
        with pytest.raises(AgentError) as info:
            await orch.dispatch("math", {"expression": "1/0"})
        assert info.value.code == 400
        assert orch.retries == 0


async def test_no_agent_yet_is_retried_until_one_comes(nc: Client, prefix: str) -> None:
    first_retry, done = anyio.Event(), anyio.Event()

    class Signalling(RetryPolicy, frozen=True):
        def delay(self, retry: int) -> float:
            first_retry.set()
            return super().delay(retry)

    orch = Orchestrator(nc, prefix=prefix)
    policy = Signalling(attempts=200, backoff=0.02, multiplier=1.0)
    result: list[Any] = []

    async def dispatch() -> None:
        result.append(await orch.dispatch("math", {"expression": "6*7"}, retry=policy))
        done.set()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(dispatch)
            await first_retry.wait()  # the first attempt failed: no responders
            async with AgentHost(nc, [MathAgent("m-1")], prefix=prefix):
                await done.wait()
    assert result == [{"value": 42}]
