"""run_pipeline: steps in order, references to earlier results, a failing step named."""

from __future__ import annotations

import pytest
from nats.aio.client import Client

from actors import AgentHost, EchoAgent, MathAgent, SummarizeAgent
from orchestrator import Orchestrator, PipelineError, StepFailed, resolve_references

pytestmark = pytest.mark.anyio


async def test_pipeline_runs_in_order_and_passes_results_on(nc: Client, prefix: str) -> None:
    agents = [MathAgent("m-1"), EchoAgent("e-1"), SummarizeAgent("s-1")]
    async with AgentHost(nc, agents, prefix=prefix):
        orch = Orchestrator(nc, prefix=prefix)
        results = await orch.run_pipeline(
            [
                {"capability": "math", "payload": {"expression": "6*7"}, "id": "answer"},
                {
                    "capability": "echo",
                    "payload": {"got": "$prev.value", "text": "v=${prev.value}"},
                },
                {"capability": "echo", "payload": ["$steps.answer", "$steps.2.got"]},
            ]
        )
    assert [r.seq for r in results] == [1, 2, 3]
    assert [r.agent for r in results] == ["m-1", "e-1", "e-1"]
    assert results[1].result == {"got": 42, "text": "v=42"}
    assert results[2].result == [{"value": 42}, 42]
    assert all(r.ok and r.task_id for r in results)


async def test_a_failing_step_stops_the_pipeline_and_is_named(nc: Client, prefix: str) -> None:
    async with AgentHost(nc, [MathAgent("m-1"), EchoAgent("e-1")], prefix=prefix):
        orch = Orchestrator(nc, prefix=prefix)
        with pytest.raises(StepFailed, match=r"pipeline step 2 'div' \(math\) failed") as info:
            await orch.run_pipeline(
                [
                    {"capability": "echo", "payload": 1},
                    {"capability": "math", "payload": {"expression": "1/0"}, "id": "div"},
                    {"capability": "echo", "payload": 3},
                ]
            )
    assert info.value.seq == 2
    assert info.value.code == 400
    assert [r.result for r in info.value.results] == [1]


def test_references_that_do_not_resolve_are_clear_errors() -> None:
    with pytest.raises(PipelineError, match="first step has no previous result"):
        resolve_references("$prev", {}, prev=None)
    with pytest.raises(PipelineError, match="no earlier step is named 'x'"):
        resolve_references({"a": "$steps.x"}, {"1": 1}, prev="1")
    with pytest.raises(PipelineError, match="no field 'missing'"):
        resolve_references("$prev.missing", {"1": {"v": 1}}, prev="1")
    assert resolve_references("cost: $5", {}, prev=None) == "cost: $5"
    assert resolve_references("${prev}", {"1": {"a": 1}}, prev="1") == '{"a":1}'
