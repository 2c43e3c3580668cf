"""``Orchestrator.run`` with a model planning and answering, over a real nats-server.

The model is a ``ScriptedModel``; the agents are the built-in ones, on the bus.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from nats.aio.client import Client

import actors
from actors import AgentHost, EchoAgent, MathAgent, SummarizeAgent
from actors.llm.models import ModelUnavailable, ScriptedCall, ScriptedModel
from orchestrator import (
    AgentInfo,
    AggregationError,
    LLMAggregator,
    LLMDecomposer,
    NoRouteError,
    Orchestrator,
    PlanError,
    Step,
    StepFailed,
)

pytestmark = pytest.mark.anyio


def plan(*steps: tuple[str, Any]) -> str:
    return json.dumps({"steps": [{"capability": c, "payload": p} for c, p in steps]})


def dispatched(host: AgentHost) -> int:
    """Tasks the hosted agents have answered (``run`` awaits each reply before going on)."""
    return sum(c.num_requests for r in host.runners.values() for c in r.counters.values())


@pytest.fixture
async def host(nc: Client, prefix: str) -> AsyncIterator[AgentHost]:
    agents = [MathAgent(), EchoAgent(), SummarizeAgent()]
    async with actors.serve(nc, agents, prefix=prefix) as hosted:
        yield hosted


def planned_by(model: ScriptedModel, nc: Client, prefix: str) -> Orchestrator:
    return Orchestrator(
        nc, prefix=prefix, decomposer=LLMDecomposer(model), aggregator=LLMAggregator(model)
    )


async def test_the_model_plans_the_steps_and_writes_the_answer(
    nc: Client, prefix: str, host: AgentHost
) -> None:
    def answer(call: ScriptedCall) -> str:
        return "6*7 is 42, and the echo said hi."

    model = ScriptedModel([plan(("math", {"expression": "6*7"}), ("echo", "hi")), answer])
    async with planned_by(model, nc, prefix) as orch:
        result = await orch.run("what is 6*7, then echo hi")
    assert [(s.seq, s.capability, s.result) for s in result.steps] == [
        (1, "math", {"value": 42}),
        (2, "echo", "hi"),
    ]
    assert all(s.agent and s.task_id for s in result.steps)
    assert result.answer == "6*7 is 42, and the echo said hi."
    planning, aggregating = model.calls
    assert "- math:" in planning.messages[0].content  # the live catalogue came from the bus
    shown = aggregating.messages[-1].content
    assert "Request: what is 6*7, then echo hi" in shown
    assert shown.index("1. math (agent ") < shown.index('{"value":42}') < shown.index("2. echo")
    assert shown.rstrip().endswith('"hi"')


async def test_a_planned_payload_may_use_earlier_results(
    nc: Client, prefix: str, host: AgentHost
) -> None:
    echo = {"answer": "$prev.value", "text": "6*7 is ${steps.1.value}"}
    model = ScriptedModel([plan(("math", {"expression": "6*7"}), ("echo", echo)), "42"])
    async with planned_by(model, nc, prefix) as orch:
        result = await orch.run("what is 6*7? tell me in a sentence")
    assert result.steps[1].result == {"answer": 42, "text": "6*7 is 42"}


async def test_an_invalid_plan_after_the_repair_dispatches_nothing(
    nc: Client, prefix: str, host: AgentHost
) -> None:
    model = ScriptedModel([plan(("calc", {"expression": "6*7"})), plan(("calc", "6*7"))])
    async with planned_by(model, nc, prefix) as orch:
        with pytest.raises(PlanError, match="unknown capability 'calc'; choose from: echo, math"):
            await orch.run("what is 6*7")
    assert "unknown capability 'calc'" in model.calls[1].messages[-1].content
    assert len(model.calls) == 2  # two plans, no aggregation
    assert dispatched(host) == 0


async def test_a_failing_reference_fails_its_step_and_keeps_the_earlier_results(
    nc: Client, prefix: str, host: AgentHost
) -> None:
    model = ScriptedModel([plan(("math", {"expression": "6*7"}), ("echo", "$prev.missing"))])
    async with planned_by(model, nc, prefix) as orch:
        with pytest.raises(StepFailed, match="no field 'missing'") as failed:
            await orch.run("what is 6*7, then echo a field it lacks")
    assert failed.value.seq == 2 and failed.value.cause.type == "bad_reference"
    assert [r.result for r in failed.value.results] == [{"value": 42}]
    assert dispatched(host) == 1


async def test_when_aggregation_fails_the_steps_are_still_reachable(
    nc: Client, prefix: str, host: AgentHost
) -> None:
    model = ScriptedModel([plan(("echo", "hi")), ModelUnavailable("connection refused")])
    async with planned_by(model, nc, prefix) as orch:
        with pytest.raises(AggregationError, match="all 1 steps succeeded") as failed:
            await orch.run("echo hi")
    assert [s.result for s in failed.value.steps] == ["hi"]


class Fixed:
    """A decomposer with a fixed answer: text steps and bound steps mixed."""

    def __init__(self, items: Sequence[str | Step]) -> None:
        self.items = list(items)
        self.seen: list[AgentInfo] = []

    async def decompose(self, request: str, agents: Sequence[AgentInfo]) -> list[str | Step]:
        self.seen = list(agents)
        return self.items


async def test_text_steps_are_routed_and_bound_steps_dispatched_as_they_are(
    nc: Client, prefix: str, host: AgentHost
) -> None:
    decomposer = Fixed(["calculate 6*7", Step(capability="echo", payload={"got": "$prev"})])
    async with Orchestrator(nc, prefix=prefix, decomposer=decomposer) as orch:
        result = await orch.run("anything")
    assert sorted(c for a in decomposer.seen for c in a.capabilities) == [
        "echo",
        "math",
        "summarize",
    ]
    assert [s.result for s in result.steps] == [{"value": 42}, {"got": {"value": 42}}]


async def test_a_bound_step_nobody_serves_is_refused_before_anything_runs(
    nc: Client, prefix: str, host: AgentHost
) -> None:
    decomposer = Fixed([Step(capability="echo", payload="x"), Step(capability="paint")])
    async with Orchestrator(nc, prefix=prefix, decomposer=decomposer) as orch:
        with pytest.raises(NoRouteError, match="step 2 \\(paint\\): no live agent serves"):
            await orch.run("echo x, then paint")
    assert dispatched(host) == 0
