"""run_pipeline as a DAG: fan-out, dependencies, a concurrency limit, failing fast or partially."""

from __future__ import annotations

import random
import time
from typing import Any

import anyio
import msgspec
import pytest
from nats.aio.client import Client

from actors import AgentHost, EchoAgent, MathAgent
from bus import AgentMessage
from orchestrator import Orchestrator, PipelineError, Step, StepFailed

pytestmark = pytest.mark.anyio


class GateAgent(EchoAgent):
    """Echo that holds every task until ``quorum`` tasks have been in flight at once.

    A pipeline that does not run that many of its steps together never gets past
    the gate (the test's ``fail_after`` says so); ``peak`` is the most it ever saw.
    """

    kind = "gate"

    def __init__(self, agent_id: str, *, quorum: int, capability: str = "gate") -> None:
        super().__init__(agent_id, capabilities=[capability], max_concurrency=100)
        self.quorum = quorum
        self.in_flight = 0
        self.peak = 0
        self.opened = anyio.Event()

    async def handle(self, task: AgentMessage) -> Any:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if self.in_flight >= self.quorum:
                self.opened.set()
            await self.opened.wait()
            return await super().handle(task)
        finally:
            self.in_flight -= 1


async def test_fan_out_returns_results_in_step_order(nc: Client, prefix: str) -> None:
    delays = random.Random(7).choices(range(201), k=50)
    steps = [
        {"capability": "echo", "payload": {"i": i, "delay_ms": d}} for i, d in enumerate(delays)
    ]
    async with AgentHost(nc, [EchoAgent("e-1", max_concurrency=64)], prefix=prefix):
        orch = Orchestrator(nc, prefix=prefix)
        started = time.perf_counter()
        with anyio.fail_after(10):
            results = await orch.run_pipeline(steps, max_concurrency=50, timeout=5)
        elapsed_ms = (time.perf_counter() - started) * 1000
    assert [r.seq for r in results] == list(range(1, 51))
    assert [r.result for r in results] == [s["payload"] for s in steps]
    assert all(r.ok and r.agent == "e-1" for r in results)
    assert elapsed_ms < sum(delays) / 2, "the steps did not run concurrently"


async def test_default_is_one_step_at_a_time_in_the_order_given(nc: Client, prefix: str) -> None:
    gate = GateAgent("g-1", quorum=1)
    async with AgentHost(nc, [gate], prefix=prefix):
        orch = Orchestrator(nc, prefix=prefix)
        results = await orch.run_pipeline(
            [{"capability": "gate", "payload": {"i": i, "delay_ms": 5}} for i in range(6)]
        )
    assert gate.peak == 1
    assert [r.result["i"] for r in results] == list(range(6))


async def test_a_diamond_runs_b_and_c_together_and_d_gets_both(nc: Client, prefix: str) -> None:
    gate = GateAgent("g-1", quorum=2)  # b and c must be in flight together to pass
    async with AgentHost(nc, [MathAgent("m-1"), EchoAgent("e-1"), gate], prefix=prefix):
        orch = Orchestrator(nc, prefix=prefix)
        with anyio.fail_after(10):
            results = await orch.run_pipeline(
                [
                    Step(id="d", capability="echo", payload={"b": "$steps.b", "c": "$steps.c"}),
                    Step(id="c", capability="gate", payload={"from_a": "$steps.a.value"}),
                    Step(id="b", capability="gate", payload={"x": "${steps.a.value}0"}),
                    Step(id="a", capability="math", payload={"expression": "6*7"}),
                ],
                max_concurrency=4,
            )
    assert [(r.seq, r.step_id) for r in results] == [(1, "d"), (2, "c"), (3, "b"), (4, "a")]
    assert results[3].result == {"value": 42}
    assert results[0].result == {"b": {"x": "420"}, "c": {"from_a": 42}}
    assert gate.peak == 2


async def test_after_orders_steps_without_references(nc: Client, prefix: str) -> None:
    gate = GateAgent("g-1", quorum=1)
    async with AgentHost(nc, [gate], prefix=prefix):
        orch = Orchestrator(nc, prefix=prefix)
        results = await orch.run_pipeline(
            [
                {"capability": "gate", "payload": {"n": 1}, "after": ["last"]},
                {"capability": "gate", "payload": {"n": 2}, "id": "last"},
            ],
            max_concurrency=2,
        )
    assert [r.result for r in results] == [{"n": 1}, {"n": 2}]
    assert gate.peak == 1, "step 1 was dispatched before the step it runs after finished"


async def test_max_concurrency_bounds_the_steps_in_flight(nc: Client, prefix: str) -> None:
    gate = GateAgent("g-1", quorum=3)  # only lets tasks through once 3 are in flight at once
    async with AgentHost(nc, [gate], prefix=prefix):
        orch = Orchestrator(nc, prefix=prefix)
        with anyio.fail_after(10):
            results = await orch.run_pipeline(
                [{"capability": "gate", "payload": {"delay_ms": 20, "i": i}} for i in range(12)],
                max_concurrency=3,
            )
    assert [r.result["i"] for r in results] == list(range(12))
    assert gate.peak == 3


def _slow_and_failing(delay_ms: int) -> list[dict[str, Any]]:
    return [
        {"id": "slow1", "capability": "echo", "payload": {"delay_ms": delay_ms, "n": 1}},
        {"id": "slow2", "capability": "echo", "payload": {"delay_ms": delay_ms, "n": 2}},
        {"id": "div", "capability": "math", "payload": {"expression": "1/0"}},
        {"id": "slow3", "capability": "echo", "payload": {"delay_ms": delay_ms, "n": 3}},
        {"id": "uses-div", "capability": "echo", "payload": {"v": "$steps.div.value"}},
        {"id": "after-that", "capability": "echo", "payload": 1, "after": ["uses-div"]},
        {"id": "fine", "capability": "math", "payload": {"expression": "2+2"}},
    ]


async def test_a_failing_step_fails_fast_and_cancels_the_rest(nc: Client, prefix: str) -> None:
    slow_cancelled = anyio.Event()
    cancelled_on_agent: list[str] = []

    async def on_cancelled(msg: Any) -> None:
        event = msgspec.json.decode(msg.data)
        if event.get("capability") == "echo":
            cancelled_on_agent.append(event["task_id"])
            if len(cancelled_on_agent) == 3:
                slow_cancelled.set()

    sub = await nc.subscribe(f"{prefix}.status.*.cancelled", cb=on_cancelled)
    await nc.flush()
    try:
        async with AgentHost(nc, [MathAgent("m-1"), EchoAgent("e-1")], prefix=prefix):
            orch = Orchestrator(nc, prefix=prefix)
            started = time.perf_counter()
            with anyio.fail_after(10), pytest.raises(StepFailed) as info:
                await orch.run_pipeline(_slow_and_failing(5000), max_concurrency=8)
            elapsed = time.perf_counter() - started
            # The caller's cancellation reaches the agent, which stops the slow tasks.
            with anyio.fail_after(3):
                await slow_cancelled.wait()
    finally:
        await sub.unsubscribe()
    assert elapsed < 3, "the failure waited for the slow steps"
    assert str(info.value).startswith("pipeline step 3 'div' (math) failed")
    assert (info.value.seq, info.value.code, info.value.cause.code) == (3, 400, 400)
    assert info.value.result.error is not None and info.value.result.agent == "m-1"
    # The slow steps were abandoned in flight; "fine" may have finished first or not.
    assert {1, 2, 4} <= set(info.value.cancelled) <= {1, 2, 4, 7}
    finished = {r.seq for r in info.value.results}
    assert finished | set(info.value.cancelled) == {1, 2, 4, 7}
    assert len(set(cancelled_on_agent)) == 3


async def test_partial_runs_what_it_can_and_names_failed_dependencies(
    nc: Client, prefix: str
) -> None:
    async with AgentHost(nc, [MathAgent("m-1"), EchoAgent("e-1")], prefix=prefix):
        orch = Orchestrator(nc, prefix=prefix)
        with anyio.fail_after(10):
            results = await orch.run_pipeline(
                _slow_and_failing(50), max_concurrency=8, partial=True
            )
    by_id = {r.step_id: r for r in results}
    assert [r.seq for r in results] == list(range(1, 8))
    assert [by_id[k].result["n"] for k in ("slow1", "slow2", "slow3")] == [1, 2, 3]
    assert by_id["fine"].result == {"value": 4}
    div = by_id["div"].error
    assert div is not None and (div.code, div.type) == (400, "bad_input")
    assert by_id["div"].agent == "m-1" and by_id["div"].task_id
    for name, cause in (("uses-div", "step 3 'div'"), ("after-that", "step 5 'uses-div'")):
        error = by_id[name].error
        assert error is not None and (error.code, error.type) == (424, "dependency_failed")
        assert cause in error.message
        assert by_id[name].task_id == "", "a step whose dependency failed was dispatched"


async def test_a_reference_to_a_missing_field_fails_that_step(nc: Client, prefix: str) -> None:
    async with AgentHost(nc, [EchoAgent("e-1")], prefix=prefix):
        orch = Orchestrator(nc, prefix=prefix)
        steps = [
            {"capability": "echo", "payload": {"a": 1}},
            {"capability": "echo", "payload": "$prev.nope"},
            {"capability": "echo", "payload": "$prev"},
        ]
        with pytest.raises(PipelineError, match=r"step 2 \(echo\): '\$prev.nope'.*no field"):
            await orch.run_pipeline(steps)
        results = await orch.run_pipeline(steps, partial=True)
    assert results[0].result == {"a": 1}
    assert results[1].error is not None and results[1].error.type == "bad_reference"
    assert results[2].error is not None and results[2].error.code == 424


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (
            [{"capability": "echo", "id": "a"}, {"capability": "echo", "after": ["b"]}],
            r"step 2 \(echo\): 'after' names no step 'b' \(step ids: a\)",
        ),
        (
            [{"capability": "echo", "id": "a"}, {"capability": "echo", "id": "a"}],
            "steps 1 and 2 have the same id 'a'",
        ),
        (
            [
                {"capability": "echo", "id": "a", "payload": "$steps.c"},
                {"capability": "echo", "id": "b", "after": ["a"]},
                {"capability": "echo", "id": "c", "payload": {"x": "${steps.b.y}"}},
            ],
            r"cycle \(each waits for the next\): step 1 'a' \(echo\) -> step 3 'c' \(echo\) "
            r"-> step 2 'b' \(echo\) -> step 1 'a' \(echo\)$",
        ),
        ([{"capability": "echo", "id": "a", "after": ["a"]}], "'a' .*depends on itself"),
        ([{"capability": "echo", "payload": "$prev"}], "first step has no previous result"),
        ([{"capability": "echo", "payload": ["$steps.x.y"]}], "names no step 'x'"),
        ([{"capability": "echo"}, {"capability": "echo", "id": "1"}], "another step's position"),
    ],
)
async def test_malformed_pipelines_fail_before_anything_is_sent(
    nc: Client, prefix: str, steps: list[dict[str, Any]], message: str
) -> None:
    sent: list[str] = []

    async def record(msg: Any) -> None:
        sent.append(msg.subject)

    sub = await nc.subscribe(f"{prefix}.task.>", cb=record)
    try:
        async with AgentHost(nc, [EchoAgent("e-1")], prefix=prefix):
            orch = Orchestrator(nc, prefix=prefix)
            with pytest.raises(PipelineError, match=message):
                await orch.run_pipeline(steps, max_concurrency=4)
            await orch.dispatch("echo", "marker")  # everything sent before it has arrived
            await nc.flush()
    finally:
        await sub.unsubscribe()
    assert sent == [f"{prefix}.task.echo"]


async def test_max_concurrency_must_be_positive(nc: Client, prefix: str) -> None:
    orch = Orchestrator(nc, prefix=prefix)
    with pytest.raises(PipelineError, match="at least 1"):
        await orch.run_pipeline([{"capability": "echo"}], max_concurrency=0)
