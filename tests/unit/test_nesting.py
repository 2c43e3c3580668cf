"""Deep nesting in a payload or a model's plan is a clear error, never a RecursionError.

A payload comes from a file, a caller or a model; one nested past the interpreter's
recursion limit used to escape as a ``RecursionError`` (issue 15.10).
"""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator import PipelineError, Step, resolve_references
from orchestrator._decompose import reference_problems
from orchestrator._pipeline import plan_dependencies
from orchestrator._plan import CatalogueEntry, check_plan
from orchestrator._references import MAX_NESTING, find_references

DEEPER_THAN_THE_STACK = 5_000
"""Levels no recursive walk survives (the interpreter's limit is 1,000 frames)."""


def nested(levels: int, bottom: Any = "$prev") -> Any:
    """``levels`` lists, one in the other, around ``bottom`` (built without recursion)."""
    value = bottom
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize("levels", [MAX_NESTING + 1, DEEPER_THAN_THE_STACK])
def test_finding_and_resolving_references_refuse_a_payload_past_the_limit(levels: int) -> None:
    payload = {"text": nested(levels - 1)}
    message = f"the payload is nested deeper than {MAX_NESTING} levels"
    with pytest.raises(PipelineError, match=message):
        list(find_references(payload))
    with pytest.raises(PipelineError, match=message):
        resolve_references(payload, {"1": "x"}, prev="1")


def test_a_payload_at_the_limit_has_its_references_found_and_resolved() -> None:
    payload = {"text": nested(MAX_NESTING - 1, "${prev.a}!")}
    assert list(find_references(payload)) == [("prev", "${prev.a}")]
    assert resolve_references(payload, {"1": {"a": "hi"}}, prev="1") == {
        "text": nested(MAX_NESTING - 1, "hi!")
    }


def test_references_are_found_in_document_order() -> None:
    payload = {"a": ["$steps.x", {"b": "${steps.y.v} ${prev}"}], "c": "$steps.z.w"}
    assert list(find_references(payload)) == [
        ("x", "$steps.x"),
        ("y", "${steps.y.v}"),
        ("prev", "${prev}"),
        ("z", "$steps.z.w"),
    ]


def test_a_pipeline_with_a_deep_payload_is_refused_naming_the_step() -> None:
    steps = [Step(capability="echo", payload=1), Step(capability="echo", payload=nested(5_000))]
    with pytest.raises(PipelineError, match=r"^step 2 \(echo\): the payload is nested deeper"):
        plan_dependencies(steps)


def test_a_decomposers_deep_step_is_a_problem_named_by_its_step() -> None:
    problems = reference_problems([Step(capability="echo", payload=nested(5_000))])
    assert problems == [f"step 1: the payload is nested deeper than {MAX_NESTING} levels"]


def test_a_models_deeply_nested_answer_is_a_problem_to_repair() -> None:
    catalogue = {"echo": CatalogueEntry(name="echo", description="", keywords=(), input_schema="")}
    answer = '{"steps": [{"capability": "echo", "payload": ' + "[" * 5_000 + "]" * 5_000 + "}]}"
    steps, problems = check_plan(answer, catalogue, max_steps=3)
    assert steps == []
    assert problems == [f"the answer nests deeper than {MAX_NESTING} levels; send a flat plan"]
