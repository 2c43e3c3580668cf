"""Tools for the LLM agent: schemas from signatures, validation, names, bus tools."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from actors.llm import (
    CapabilityTool,
    FunctionTool,
    Tool,
    ToolArgumentsError,
    ToolUnavailable,
    as_tool,
    capability_tools,
    tool,
    tool_name,
)
from bus import ConfigError
from bus.micro import CapabilityInfo

pytestmark = pytest.mark.anyio


class Point(msgspec.Struct):
    """A point on the grid."""

    x: int
    y: int = 0


def scale(value: float, factor: float = 2.0, *, label: str | None = None) -> dict[str, Any]:
    """Multiply a value by a factor.

    The label, if given, is echoed back.

    Args:
        value: the number to scale,
            any real number.
        factor (float): how much to multiply by.
    """
    return {"value": value * factor, "label": label}


async def norm(point: Point) -> int:
    """Manhattan norm of a point."""
    return abs(point.x) + abs(point.y)


def collections(names: list[str], counts: dict[str, int], tags: list[str] = ["a"]) -> int:  # noqa: B006
    return len(names) + sum(counts.values()) + len(tags)


def test_schema_from_a_signature_with_defaults_and_optionals() -> None:
    t = FunctionTool.from_callable(scale)
    assert t.name == "scale"
    assert t.description == "Multiply a value by a factor."
    assert t.parameters["type"] == "object"
    assert t.parameters["required"] == ["value"]
    props = t.parameters["properties"]
    assert props["value"] == {
        "type": "number",
        "description": "the number to scale, any real number.",
    }
    assert props["factor"]["default"] == 2.0
    assert props["factor"]["description"] == "how much to multiply by."
    assert props["label"]["anyOf"] == [{"type": "string"}, {"type": "null"}]
    assert "$ref" not in t.parameters
    assert t.spec().parameters == t.parameters


def test_a_single_struct_parameter_uses_the_structs_schema() -> None:
    t = FunctionTool.from_callable(norm)
    assert t.parameters["properties"] == {
        "x": {"type": "integer"},
        "y": {"type": "integer", "default": 0},
    }
    assert t.parameters["required"] == ["x"]


def test_list_and_dict_parameters() -> None:
    t = FunctionTool.from_callable(collections)
    props = t.parameters["properties"]
    assert props["names"] == {"type": "array", "items": {"type": "string"}}
    assert props["counts"] == {"type": "object", "additionalProperties": {"type": "integer"}}
    assert sorted(t.parameters["required"]) == ["counts", "names"]


def test_nested_structs_keep_their_definitions_at_the_root() -> None:
    def move(points: list[Point], by: int) -> int:
        return by

    t = FunctionTool.from_callable(move)
    assert t.parameters["properties"]["points"]["items"] == {"$ref": "#/$defs/Point"}
    assert "Point" in t.parameters["$defs"]


async def test_arguments_are_validated_and_converted_before_the_call() -> None:
    t = FunctionTool.from_callable(scale)
    assert await t.invoke({"value": "3", "label": "x"}) == {"value": 6.0, "label": "x"}
    with pytest.raises(ToolArgumentsError, match=r"Expected `float`, got `str` - at `\$.value`"):
        await t.invoke({"value": "three"})
    with pytest.raises(ToolArgumentsError, match="unknown field `valu`"):
        await t.invoke({"valu": 1})
    with pytest.raises(ToolArgumentsError, match="missing required field `value`"):
        await t.invoke({})


async def test_async_functions_and_struct_parameters_are_called() -> None:
    assert await FunctionTool.from_callable(norm).invoke({"x": 3, "y": -4}) == 7
    assert await FunctionTool.from_callable(collections).invoke(
        {"names": ["a"], "counts": {"b": 2}}
    ) == (1 + 2 + 1)


async def test_the_decorator_names_and_describes() -> None:
    @tool
    def add(a: int, b: int, /) -> int:
        """Add two integers."""
        return a + b

    @tool(name="times", description="Multiply.")
    async def multiply(a: int, b: int) -> int:
        return a * b

    assert isinstance(add, FunctionTool) and add.description == "Add two integers."
    assert await add.invoke({"a": 2, "b": 3}) == 5
    assert (multiply.name, multiply.description) == ("times", "Multiply.")
    assert await multiply.invoke({"a": 2, "b": 3}) == 6


def test_variadic_parameters_are_refused() -> None:
    def loose(*args: int) -> int:
        return 0

    with pytest.raises(ConfigError, match="use named parameters"):
        FunctionTool.from_callable(loose)


def test_tool_names_are_valid_and_long_ones_stay_distinct() -> None:
    assert tool_name("math") == "math"
    assert tool_name("dé.jà vu") == "d__j__vu"
    long_a, long_b = "a" * 100 + "x", "a" * 100 + "y"
    assert len(tool_name(long_a)) == 64
    assert tool_name(long_a) != tool_name(long_b)
    with pytest.raises(ConfigError, match="invalid tool name"):
        FunctionTool.from_callable(scale, name="has space")


def test_import_paths_and_callables_become_tools() -> None:
    dedent = as_tool("textwrap:dedent")
    assert dedent.name == "dedent"
    assert "text" in dedent.parameters["properties"]
    assert as_tool(scale).name == "scale"
    t = FunctionTool.from_callable(norm)
    assert as_tool(t) is t
    with pytest.raises(ConfigError, match="module:function"):
        as_tool("textwrap")
    with pytest.raises(ConfigError, match="has no 'nope'"):
        as_tool("textwrap:nope")
    with pytest.raises(ConfigError, match="cannot import"):
        as_tool("no_such_module_xyz:f")


def test_an_object_input_schema_is_the_tools_parameters() -> None:
    t = CapabilityTool("math", input_schema=msgspec.json.schema(Point), description="Do math.")
    assert not t.wrapped
    assert t.parameters["properties"]["x"] == {"type": "integer"}
    assert t.spec().description == "Do math."


@pytest.mark.parametrize(
    "schema",
    [{}, {"type": "string"}, msgspec.json.schema(str | Point)],
    ids=["any", "string", "union"],
)
def test_other_input_schemas_are_wrapped_as_input(schema: dict[str, Any]) -> None:
    t = CapabilityTool("echo", input_schema=schema)
    assert t.wrapped
    assert t.parameters["type"] == "object"
    assert t.parameters["required"] == ["input"]
    inner = t.parameters["properties"]["input"]
    assert "$defs" not in inner
    if "$defs" in schema:
        assert t.parameters["$defs"] == schema["$defs"]


async def test_a_capability_tool_outside_a_task_fails_clearly() -> None:
    t = CapabilityTool("echo", input_schema={})
    for arguments in ({"input": "hi"}, {"text": "hi"}):
        with pytest.raises(ToolUnavailable, match="needs a running task"):
            await t.invoke(arguments)


def test_capability_tools_one_per_capability_with_unique_names() -> None:
    found = [
        CapabilityInfo(name="echo", agent_id="e-1", description="Echo."),
        CapabilityInfo(name="math", agent_id="m-1", input_schema=msgspec.json.schema(Point)),
        CapabilityInfo(name="math", agent_id="m-2"),
        CapabilityInfo(name="chat", agent_id="llm-1"),
    ]
    every = capability_tools(found, None, exclude=["chat"], taken=["echo"])
    assert [(t.name, t.capability) for t in every] == [("echo_2", "echo"), ("math", "math")]
    assert not every[1].wrapped  # the first replica's schema
    named = capability_tools(found, ["math", "gone"])
    assert [t.capability for t in named] == ["math", "gone"]
    assert named[1].wrapped  # nobody serves it now: any input


def test_a_tool_subclass_needs_only_invoke() -> None:
    class Clock(Tool):
        async def invoke(self, arguments: dict[str, Any]) -> Any:
            return 12

    clock = Clock("clock", description="The hour.")
    assert clock.spec().parameters == {"type": "object", "properties": {}}
