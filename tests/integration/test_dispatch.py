"""Dispatch over a real nats-server: results and every typed failure."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
from nats.aio.client import Client

from actors import Agent, AgentHost, EchoAgent, MathAgent
from bus import (
    AgentError,
    AgentMessage,
    AgentOverloaded,
    NoAgentError,
    TaskClient,
    TaskTimeout,
    UsageError,
    now_ms,
)
from bus.codec import AGENT_ID, DEADLINE, ERROR_CODE, TASK_ID
from orchestrator import Orchestrator

pytestmark = pytest.mark.anyio


class Crashing(Agent):
    kind = "crash"
    capabilities = ("crash",)

    async def handle(self, task: AgentMessage) -> Any:
        if task.payload == "boom":
            raise RuntimeError("kaboom")
        return "fine"


async def test_dispatch_returns_the_result(nc: Client, prefix: str) -> None:
    async with AgentHost(nc, [MathAgent("m-1")], prefix=prefix):
        orch = Orchestrator(nc, prefix=prefix)
        assert await orch.dispatch("math", {"expression": "6*7"}) == {"value": 42}
        reply = await orch.request("math", {"expression": "2*(3+4)"}, task_id="my-task-1")
        assert reply.payload == {"value": 14}
        assert reply.task_id == "my-task-1"
        assert reply.sender == "m-1"


async def test_raw_request_gets_task_id_and_agent_id_headers(nc: Client, prefix: str) -> None:
    async with AgentHost(nc, [MathAgent("m-1")], prefix=prefix):
        msg = await nc.request(
            f"{prefix}.task.math", b'{"expression": "6*7"}', timeout=5, headers={TASK_ID: "abc"}
        )
        assert msg.data == b'{"value":42}'
        assert msg.headers == {TASK_ID: "abc", AGENT_ID: "m-1"}
        plain = await nc.request(f"{prefix}.task.math", b'{"expression": "1+1"}', timeout=5)
        assert plain.data == b'{"value":2}'
        assert plain.headers is not None and len(plain.headers[TASK_ID]) == 22


async def test_no_agent_fails_at_once_not_after_the_timeout(nc: Client, prefix: str) -> None:
    orch = Orchestrator(nc, prefix=prefix)
    started = time.monotonic()
    with pytest.raises(NoAgentError, match="no agent serves capability 'math'") as info:
        await orch.dispatch("math", {"expression": "1"}, timeout=10)
    assert time.monotonic() - started < 5
    assert info.value.code == 404


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), -float("inf"), 1e308])
async def test_a_timeout_that_is_no_duration_is_a_usage_error(
    nc: Client, prefix: str, timeout: float
) -> None:
    client = TaskClient(nc, prefix=prefix)
    with pytest.raises(UsageError, match="timeout is a number of seconds"):
        await client.request("echo", {}, timeout=timeout)


async def test_timeout_is_typed(nc: Client, prefix: str) -> None:
    async with AgentHost(nc, [EchoAgent("e-1")], prefix=prefix):
        orch = Orchestrator(nc, prefix=prefix)
        with pytest.raises(TaskTimeout, match="no reply within") as info:
            await orch.dispatch("echo", {"delay_ms": 5000}, timeout=0.2)
        assert info.value.capability == "echo"


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"expression": "1/0"}, "division by zero"),
        ({"expression": "__import__('os')"}, "unsupported syntax"),
        ({"expression": "9**9**9"}, "too large"),
        ({"expression": 42}, "Expected `str`, got `int` - at `$.expression`"),
        ({"expr": "1"}, "missing required field `expression`"),
        ("6*7", "Expected `object`, got `str`"),
    ],
)
async def test_bad_input_is_a_400_naming_the_problem(
    nc: Client, prefix: str, payload: Any, fragment: str
) -> None:
    async with AgentHost(nc, [MathAgent("m-1")], prefix=prefix):
        orch = Orchestrator(nc, prefix=prefix)
        with pytest.raises(AgentError) as info:
            await orch.dispatch("math", payload)
        assert info.value.code == 400
        assert info.value.type == "bad_input"
        assert fragment in info.value.message
        assert info.value.agent_id == "m-1"
        assert await orch.dispatch("math", {"expression": "6*7"}) == {"value": 42}


@pytest.mark.parametrize("body", [b"not json", b'{"expression": "\xff"}', b"\x00\x01", b"{"])
async def test_malformed_bodies_get_a_400_reply(nc: Client, prefix: str, body: bytes) -> None:
    async with AgentHost(nc, [MathAgent("m-1")], prefix=prefix):
        msg = await nc.request(f"{prefix}.task.math", body, timeout=5)
        assert msg.headers is not None
        assert msg.headers[ERROR_CODE] == "400"
        assert b'"bad_input"' in msg.data
        ok = await nc.request(f"{prefix}.task.math", b'{"expression": "6*7"}', timeout=5)
        assert ok.data == b'{"value":42}'


async def test_handler_exception_is_a_500_and_the_agent_keeps_serving(
    nc: Client, prefix: str
) -> None:
    async with AgentHost(nc, [Crashing("c-1")], prefix=prefix):
        orch = Orchestrator(nc, prefix=prefix)
        with pytest.raises(AgentError, match="RuntimeError: kaboom") as info:
            await orch.dispatch("crash", "boom")
        assert info.value.code == 500
        assert await orch.dispatch("crash", "ok") == "fine"


async def test_an_agent_at_its_limit_answers_503_at_once(nc: Client, prefix: str) -> None:
    async with AgentHost(nc, [EchoAgent("e-1", max_concurrency=1)], prefix=prefix):
        orch = Orchestrator(nc, prefix=prefix)
        started_events = await nc.subscribe(f"{prefix}.status.e-1.started")
        async with anyio.create_task_group() as tg:
            tg.start_soon(orch.dispatch, "echo", {"delay_ms": 1000})
            await started_events.next_msg(timeout=5)
            started = time.monotonic()
            with pytest.raises(AgentOverloaded, match="concurrency limit") as info:
                await orch.dispatch("echo", {"x": 1}, timeout=10)
            assert time.monotonic() - started < 0.9
            assert info.value.code == 503


async def test_a_task_past_its_deadline_is_not_run(nc: Client, prefix: str) -> None:
    async with AgentHost(nc, [EchoAgent("e-1")], prefix=prefix):
        headers = {TASK_ID: "late", DEADLINE: str(now_ms() - 1000)}
        msg = await nc.request(f"{prefix}.task.echo", b"{}", timeout=5, headers=headers)
        assert msg.headers is not None and msg.headers[ERROR_CODE] == "408"


async def test_the_handler_is_cut_at_the_deadline(nc: Client, prefix: str) -> None:
    async with AgentHost(nc, [EchoAgent("e-1")], prefix=prefix) as host:
        headers = {TASK_ID: "cut", DEADLINE: str(now_ms() + 300)}
        sub = await nc.subscribe(f"{prefix}.status.e-1.failed")
        await nc.publish(f"{prefix}.task.echo", b'{"delay_ms": 5000}', headers=headers)
        with anyio.fail_after(3):
            msg = await sub.next_msg(timeout=3)
        assert b'"code":408' in msg.data
        assert host.in_flight == 0


async def test_direct_address_reaches_one_instance(nc: Client, prefix: str) -> None:
    agents = [EchoAgent("e-1"), EchoAgent("e-2")]
    async with AgentHost(nc, agents, prefix=prefix):
        client = TaskClient(nc, prefix=prefix)
        for _ in range(10):
            reply = await client.request("echo", 1, agent_id="e-2")
            assert reply.sender == "e-2"
        # security: the capability is in the direct subject, so nobody listens there
        with pytest.raises(NoAgentError, match=r"agent\.math\.e-2"):
            await client.request("math", 1, agent_id="e-2")
