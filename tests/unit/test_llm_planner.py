"""``LLMDecomposer`` and ``LLMAggregator`` against a scripted model (no bus)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from actors.builtins import MathInput, SummarizeInput
from actors.llm.models import ChatMessage, ModelUnavailable, ScriptedModel
from bus import ErrorInfo
from orchestrator import (
    AgentInfo,
    AggregationError,
    LLMAggregator,
    LLMDecomposer,
    NoRouteError,
    PlanError,
    RuleDecomposer,
    Step,
    StepResult,
)

pytestmark = pytest.mark.anyio


def schema_of(kind: type[msgspec.Struct]) -> str:
    return msgspec.json.encode(msgspec.json.schema(kind)).decode()


AGENTS = [
    AgentInfo(
        id="m-1",
        capabilities=("math",),
        description="Evaluates arithmetic safely.",
        keywords={"math": ("calculate", "compute")},
        input_schemas={"math": schema_of(MathInput)},
    ),
    AgentInfo(id="e-1", capabilities=("echo",), description="Returns the payload unchanged."),
    AgentInfo(
        id="s-1",
        capabilities=("summarize",),
        input_schemas={"summarize": schema_of(SummarizeInput)},
    ),
]


def plan(*steps: tuple[str, Any]) -> str:
    return json.dumps({"steps": [{"capability": c, "payload": p} for c, p in steps]})


def last_text(model: ScriptedModel) -> str:
    return model.calls[-1].messages[-1].content


async def test_a_valid_plan_becomes_steps_bound_to_capabilities() -> None:
    model = ScriptedModel([plan(("math", {"expression": "6*7"}), ("echo", "$prev.value"))])
    steps = await LLMDecomposer(model).decompose("what is 6*7, then echo it", AGENTS)
    assert steps == [
        Step(capability="math", payload={"expression": "6*7"}),
        Step(capability="echo", payload="$prev.value"),
    ]
    (call,) = model.calls
    assert [m.role for m in call.messages] == ["system", "user"]
    assert call.messages[1].content == "what is 6*7, then echo it"
    assert call.output_schema is not None
    branches = call.output_schema["properties"]["steps"]["items"]["oneOf"]
    named = [b["properties"]["capability"]["const"] for b in branches]
    assert named == ["echo", "math", "summarize"]


async def test_the_prompt_lists_the_live_capabilities_with_their_schemas() -> None:
    model = ScriptedModel([plan(("echo", "hi"))])
    await LLMDecomposer(model, max_steps=3).decompose("echo hi", AGENTS)
    prompt = model.calls[0].messages[0].content
    catalogue = prompt[prompt.index("Capabilities:") :]
    assert [line.split(":")[0] for line in catalogue.splitlines() if line.startswith("- ")] == [
        "- echo",
        "- math",
        "- summarize",
    ]
    assert "- math: Evaluates arithmetic safely." in catalogue
    assert "keywords: calculate, compute" in catalogue
    math_schema = '"properties":{"expression":{"type":"string"}},"required":["expression"]'
    assert math_schema in catalogue  # the object itself, not its $ref
    assert '"required":["text"]' in catalogue
    assert "input schema: {} (any JSON value)" in catalogue  # echo declares none
    assert "at most 3" in prompt and "$prev" in prompt and "$steps.<n>" in prompt


async def test_an_unknown_capability_is_repaired_once() -> None:
    model = ScriptedModel([plan(("calc", {"expression": "6*7"})), plan(("math", "6*7"))])
    with pytest.raises(PlanError) as failed:
        await LLMDecomposer(model).decompose("what is 6*7", AGENTS)
    # the repair named the problem and showed the model its own answer
    repair = model.calls[1].messages
    assert [m.role for m in repair] == ["system", "user", "assistant", "user"]
    assert repair[2].content == plan(("calc", {"expression": "6*7"}))
    assert "unknown capability 'calc'; choose from: echo, math, summarize" in repair[3].content
    # the second answer was used, and it was wrong in its own way
    assert failed.value.problems == (
        "step 1 (math): the payload must be a JSON object (required: expression)",
    )
    assert "after one repair" in str(failed.value)
    assert "the payload must be a JSON object (required: expression)" in str(failed.value)
    assert failed.value.code == 422
    assert isinstance(failed.value, NoRouteError)


async def test_the_repaired_plan_is_used() -> None:
    model = ScriptedModel(
        [plan(("calc", {"expression": "6*7"})), plan(("math", {"expression": "6*7"}))]
    )
    steps = await LLMDecomposer(model).decompose("what is 6*7", AGENTS)
    assert steps == [Step(capability="math", payload={"expression": "6*7"})]
    assert model.remaining == 0


async def test_a_plan_invalid_twice_names_the_problem() -> None:
    model = ScriptedModel([plan(("paint", "a cat")), plan(("paint", "a dog"))])
    with pytest.raises(PlanError, match="unknown capability 'paint'; choose from: echo, math"):
        await LLMDecomposer(model).decompose("paint a cat", AGENTS)
    assert len(model.calls) == 2


async def test_without_repair_the_first_invalid_plan_is_an_error() -> None:
    model = ScriptedModel([plan(("paint", "a cat"))])
    with pytest.raises(PlanError) as failed:
        await LLMDecomposer(model, repair=False).decompose("paint a cat", AGENTS)
    assert "after one repair" not in str(failed.value)
    assert failed.value.answer == plan(("paint", "a cat"))


async def test_an_answer_that_is_not_json_is_repaired() -> None:
    model = ScriptedModel(
        ["Sure! First I will compute 6*7.", plan(("math", {"expression": "6*7"}))]
    )
    steps = await LLMDecomposer(model).decompose("what is 6*7", AGENTS)
    assert [s.capability for s in steps] == ["math"]
    assert "the answer is not JSON" in last_text(model)


async def test_a_fenced_json_answer_is_accepted() -> None:
    model = ScriptedModel([f"```json\n{plan(('echo', 'hi'))}\n```"])
    assert await LLMDecomposer(model).decompose("echo hi", AGENTS) == [
        Step(capability="echo", payload="hi")
    ]


async def test_too_many_steps_and_an_empty_plan_are_rejected() -> None:
    model = ScriptedModel([plan(*[("echo", i) for i in range(3)]), plan()])
    with pytest.raises(PlanError, match="the plan has no steps") as failed:
        await LLMDecomposer(model, max_steps=2).decompose("echo 0, 1, 2", AGENTS)
    assert "the plan has 3 steps; use at most 2" in last_text(model)
    assert failed.value.problems == ("the plan has no steps; give at least one",)


async def test_a_missing_required_payload_key_and_a_missing_payload() -> None:
    first = json.dumps(
        {
            "steps": [
                {"capability": "summarize", "payload": {"sentences": 1}},
                {"capability": "echo"},
            ]
        }
    )
    model = ScriptedModel([first, plan(("summarize", {"text": "A. B.", "sentences": 1}))])
    steps = await LLMDecomposer(model).decompose("summarize A. B.", AGENTS)
    assert steps == [Step(capability="summarize", payload={"text": "A. B.", "sentences": 1})]
    repair = last_text(model)
    assert "step 1 (summarize): the payload lacks the required field text" in repair
    assert "step 2 (echo): no payload" in repair


async def test_references_must_point_to_earlier_steps() -> None:
    model = ScriptedModel(
        [plan(("echo", "$prev"), ("echo", "$steps.3.value")), plan(("echo", "$steps.2"))]
    )
    with pytest.raises(PlanError) as failed:
        await LLMDecomposer(model).decompose("echo", AGENTS)
    repair = model.calls[1].messages[-1].content
    assert "'$prev': the first step has no previous result" in repair
    assert "'$steps.3.value': step 3 does not run before it" in repair
    assert failed.value.problems == ("step 1: '$steps.2': step 2 does not run before it",)


async def test_a_whole_reference_may_stand_for_an_object_payload() -> None:
    model = ScriptedModel([plan(("echo", {"text": "A. B."}), ("summarize", "$prev"))])
    steps = await LLMDecomposer(model).decompose("summarize A. B.", AGENTS)
    assert steps[1] == Step(capability="summarize", payload="$prev")


async def test_no_live_agents_is_a_no_route_error_without_asking_the_model() -> None:
    model = ScriptedModel([])
    with pytest.raises(NoRouteError, match="no live agents") as failed:
        await LLMDecomposer(model).decompose("echo hi", [])
    assert not isinstance(failed.value, PlanError)
    assert model.calls == []


async def test_the_rule_decomposer_ignores_the_agents() -> None:
    assert await RuleDecomposer().decompose("echo a. Then echo b", AGENTS) == ["echo a", "echo b"]


RESULTS = [
    StepResult(seq=1, capability="math", agent="m-1", result={"value": 42}),
    StepResult(seq=2, capability="echo", agent="e-1", result="hi"),
]


async def test_the_aggregator_gives_the_model_every_result_in_order() -> None:
    model = ScriptedModel([ChatMessage.assistant("  6*7 is 42, and hi.  ")])
    answer = await LLMAggregator(model).aggregate("what is 6*7, then echo hi", RESULTS)
    assert answer == "6*7 is 42, and hi."
    (call,) = model.calls
    assert call.output_schema is None
    text = call.messages[-1].content
    assert "Request: what is 6*7, then echo hi" in text
    assert '1. math (agent m-1): {"value":42}\n2. echo (agent e-1): "hi"' in text


async def test_the_aggregator_shows_failed_steps_as_errors() -> None:
    failed = StepResult(
        seq=1, capability="math", error=ErrorInfo(code=400, type="bad_input", message="bad")
    )
    model = ScriptedModel(["math failed."])
    await LLMAggregator(model).aggregate("what is 1/0", [failed])
    assert "1. math: failed: error 400 (bad_input): bad" in model.calls[0].messages[-1].content


async def test_a_model_failure_while_aggregating_carries_the_steps() -> None:
    model = ScriptedModel([ModelUnavailable("cannot reach 127.0.0.1:11434")])
    with pytest.raises(AggregationError) as failed:
        await LLMAggregator(model).aggregate("what is 6*7, then echo hi", RESULTS)
    assert failed.value.steps == RESULTS
    assert isinstance(failed.value.cause, ModelUnavailable)
    assert failed.value.code == 503
    assert str(failed.value).startswith("all 2 steps succeeded, but scripted:model could not")
    empty = ScriptedModel([""])
    with pytest.raises(AggregationError, match="empty answer"):
        await LLMAggregator(empty).aggregate("x", RESULTS)
