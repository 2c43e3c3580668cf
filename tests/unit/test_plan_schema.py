"""``plan_schema``: a plan's JSON Schema, typed by the live capabilities' real input schemas.

The schemas come from the built-in agents as discovery publishes them, and
plans are validated with ``jsonschema`` (what a constrained decoder enforces
is this same schema).
"""

from __future__ import annotations

from typing import Any

import jsonschema
import msgspec
import pytest

from actors.builtins import EchoAgent, MathAgent, SummarizeAgent
from orchestrator import AgentInfo
from orchestrator._plan import catalogue_of
from orchestrator._plan_schema import MAX_SCHEMA_DEPTH, REFERENCE_SCHEMA, plan_schema


def published(agent: type[MathAgent | SummarizeAgent | EchoAgent], agent_id: str) -> AgentInfo:
    """The agent as discovery shows it: its capability's input schema as JSON text."""
    (cap,) = agent.capabilities
    return AgentInfo(
        id=agent_id,
        capabilities=(cap.name,),
        description=cap.description,
        input_schemas={cap.name: msgspec.json.encode(cap.input_schema()).decode()},
    )


AGENTS = [
    published(MathAgent, "m-1"),
    published(SummarizeAgent, "s-1"),
    published(EchoAgent, "e-1"),
]
SCHEMA = plan_schema(catalogue_of(AGENTS), max_steps=4)


def plan(*steps: tuple[str, Any]) -> dict[str, Any]:
    return {"steps": [{"capability": c, "payload": p} for c, p in steps]}


def problems(instance: Any, schema: dict[str, Any] = SCHEMA) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [error.message for error in validator.iter_errors(instance)]


def test_the_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_each_step_is_one_branch_per_capability_with_its_name_fixed() -> None:
    branches = SCHEMA["properties"]["steps"]["items"]["oneOf"]
    assert [b["properties"]["capability"] for b in branches] == [
        {"const": "echo"},
        {"const": "math"},
        {"const": "summarize"},
    ]
    assert all(b["additionalProperties"] is False for b in branches)
    echo, math, summarize = (b["properties"]["payload"] for b in branches)
    assert echo == {}  # echo takes any JSON
    assert math["anyOf"][0]["required"] == ["expression"]
    assert math["anyOf"][1] == REFERENCE_SCHEMA
    sentences = summarize["anyOf"][0]["properties"]["sentences"]
    assert sentences["anyOf"][0] == {"type": "integer", "minimum": 1, "maximum": 1000, "default": 3}


def test_a_valid_two_step_plan_validates() -> None:
    good = plan(("math", {"expression": "1234*5678"}), ("echo", {"text": "${prev.value}"}))
    assert problems(good) == []
    assert problems(plan(("summarize", {"text": "A. B.", "sentences": 1}), ("echo", "$prev"))) == []


@pytest.mark.parametrize(
    "payload",
    [
        {"expr": "1234*5678"},  # the field has another name
        {"expression": 1234},  # the right name, the wrong type
        "1234*5678",  # a bare string is not an object, nor a reference
        [],
    ],
)
def test_a_wrong_math_payload_does_not_validate(payload: Any) -> None:
    assert problems(plan(("math", payload))) != []


def test_a_payload_of_another_capability_does_not_validate() -> None:
    assert problems(plan(("math", {"text": "an article"}))) != []
    assert problems(plan(("summarize", {"expression": "6*7"}))) != []
    assert problems(plan(("summarize", {"text": "A. B.", "sentences": 0}))) != []


def test_unknown_capabilities_extra_keys_and_bad_step_counts_do_not_validate() -> None:
    assert problems(plan(("weather", {"city": "Oslo"}))) != []
    assert problems({"steps": [{"capability": "echo", "payload": 1, "why": "x"}]}) != []
    assert problems({"steps": []}) != []
    assert problems(plan(*[("echo", n) for n in range(5)])) != []  # max_steps=4
    assert problems({"plan": []}) != []


def test_earlier_results_may_stand_for_a_payload_or_a_field() -> None:
    later = plan(("math", {"expression": "2+2"}), ("summarize", {"text": "$prev.value"}))
    assert problems(later) == []
    by_position = plan(("echo", 3), ("summarize", {"text": "x", "sentences": "$steps.1"}))
    assert problems(by_position) == []
    assert problems(plan(("echo", 3), ("math", "$prev"))) == []
    not_a_reference = plan(("echo", 3), ("summarize", {"text": "x", "sentences": "$previous"}))
    assert problems(not_a_reference) != []


def schema_with(input_schemas: dict[str, Any]) -> dict[str, Any]:
    agents = [
        AgentInfo(
            id=f"a-{name}",
            capabilities=(name,),
            input_schemas={name: s if isinstance(s, str) else msgspec.json.encode(s).decode()},
        )
        for name, s in input_schemas.items()
    ]
    return plan_schema(catalogue_of(agents), max_steps=2)


def test_definitions_of_two_capabilities_with_the_same_name_do_not_collide() -> None:
    def point(field: str) -> dict[str, Any]:
        return {
            "$ref": "#/$defs/Point",
            "$defs": {
                "Point": {
                    "type": "object",
                    "properties": {field: {"$ref": "#/definitions/Coord"}},
                    "required": [field],
                },
            },
            "definitions": {"Coord": {"type": "number"}},
        }

    schema = schema_with({"a": point("x"), "b": point("y")})
    jsonschema.Draft202012Validator.check_schema(schema)
    assert set(schema["$defs"]) == {"a.Point", "a.Coord", "b.Point", "b.Coord"}
    assert problems(plan(("a", {"x": 1}), ("b", {"y": 2})), schema) == []
    assert problems(plan(("a", {"y": 1})), schema) != []
    assert problems(plan(("b", {"y": "two"})), schema) != []


@pytest.mark.parametrize(
    "input_schema",
    [
        "not json",
        [1, 2],
        {"$ref": "https://attacker.example/schema.json"},  # nothing is fetched
        {"$ref": "#/$defs/Missing"},
        {"$ref": "#/$defs/a~1b", "$defs": {"a/b": {"type": "object"}}},
        {"type": "object", "$defs": "not an object"},
    ],
)
def test_a_schema_that_cannot_be_embedded_leaves_that_payload_open(input_schema: Any) -> None:
    schema = schema_with({"odd": input_schema, "math": MathAgent.capabilities[0].input_schema()})
    jsonschema.Draft202012Validator.check_schema(schema)
    assert problems(plan(("odd", {"anything": [1]}), ("math", {"expression": "1"})), schema) == []
    assert problems(plan(("math", {"expr": "1"})), schema) != []
    assert "https" not in msgspec.json.encode(schema).decode()


@pytest.mark.parametrize("levels", [MAX_SCHEMA_DEPTH, 800])
def test_a_schema_nested_too_deep_leaves_that_payload_open(levels: int) -> None:
    nested = '{"type": "object", "properties": {"next": ' * levels
    text = '{"$defs": {"Leaf": {"type": "string"}}, ' + nested[1:] + '{"$ref": "#/$defs/Leaf"}'
    text += "}}" * levels
    schema = schema_with({"deep": text})
    (branch,) = schema["properties"]["steps"]["items"]["oneOf"]
    assert branch["properties"]["payload"] == {}
    msgspec.json.encode(schema)  # what the model client sends must encode


def test_a_schema_just_within_the_depth_is_kept() -> None:
    levels = MAX_SCHEMA_DEPTH // 2 - 2  # each level is an object and its properties
    nested = '{"type": "object", "properties": {"next": ' * levels
    text = nested + '{"type": "string"}' + "}}" * levels
    schema = schema_with({"deep": text})
    (branch,) = schema["properties"]["steps"]["items"]["oneOf"]
    assert branch["properties"]["payload"]["anyOf"][0]["type"] == "object"
