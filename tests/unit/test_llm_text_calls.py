"""Tool calls a model writes as text: the outputs a real small model printed
(Qwen2.5-Coder-1.5B-Instruct under llama-server, issue 17) are run as calls, and
nothing looser is.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from actors.builtins._agents import MathInput
from actors.llm import AgentLoop, CapabilityTool, LLMAgent, Tool, ToolRoundsExceeded, tool
from actors.llm._text_calls import text_tool_calls
from actors.llm.models import ChatMessage, ScriptedCall, ScriptedModel

pytestmark = pytest.mark.anyio


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


MATH = CapabilityTool("math", input_schema=msgspec.json.schema(MathInput))
TOOLS: dict[str, Tool] = {"math": MATH, "add": add}

QWEN_BARE = '{"name": "math", "arguments": {"expression": "1234*5678"}}'
QWEN_FENCED = '```json\n{"name": "math", "arguments": {"expression": "1234*5678"}}\n```'


@pytest.mark.parametrize(
    "content",
    [
        QWEN_BARE,
        QWEN_FENCED,
        f"  \n{QWEN_FENCED}\n",
        f"```\n{QWEN_BARE}\n```",
        f"<tool_call>\n{QWEN_BARE}\n</tool_call>",
        f"<tool_call>\n{QWEN_FENCED}\n</tool_call>",
        '{"name": "math", "parameters": {"expression": "1234*5678"}}',  # Llama's spelling
    ],
)
def test_a_call_written_as_text_is_recognised(content: str) -> None:
    (call,) = text_tool_calls(content, TOOLS)
    assert (call.name, call.arguments) == ("math", {"expression": "1234*5678"})
    assert call.id.startswith("text_call_")


def test_several_tagged_calls_are_several_calls() -> None:
    content = (
        f'<tool_call>{QWEN_BARE}</tool_call>\n<tool_call>{{"name": "add", '
        '"arguments": {"a": 1, "b": 2}}</tool_call>'
    )
    calls = text_tool_calls(content, TOOLS)
    assert [(c.name, c.arguments) for c in calls] == [
        ("math", {"expression": "1234*5678"}),
        ("add", {"a": 1, "b": 2}),
    ]
    assert len({c.id for c in calls}) == 2


@pytest.mark.parametrize(
    "content",
    [
        '{"name": "search", "arguments": {"q": "x"}}',  # not an offered tool
        '{"name": "math", "arguments": {"expression": 5}}',  # off its schema
        '{"name": "add", "arguments": {"a": 1}}',  # a required argument missing
        '{"name": "math", "arguments": {"expression": "1"}, "id": "c1"}',  # another key
        '{"name": "math"}',
        '{"name": "math", "arguments": "1234*5678"}',
        f"Sure! {QWEN_BARE}",  # prose around it: an answer that quotes a call
        f"{QWEN_FENCED}\nThat computes it.",
        f"<tool_call>{QWEN_BARE}</tool_call> and then I add",
        '{"name": "math", "arguments": {"expression": "1234*5678"}',  # not JSON
        '["math", {"expression": "1234*5678"}]',
        "7006652",
        "",
    ],
)
def test_anything_looser_stays_the_answer(content: str) -> None:
    assert text_tool_calls(content, TOOLS) == ()


def test_no_tools_offered_means_no_calls() -> None:
    assert text_tool_calls(QWEN_BARE, {}) == ()


async def test_the_loop_runs_a_call_written_as_text_and_counts_it() -> None:
    def answer(call: ScriptedCall) -> str:
        return f"2+3 = {msgspec.json.decode(call.messages[-1].content)}"

    model = ScriptedModel(['```json\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n```', answer])
    loop = AgentLoop(model, [add])
    result = await loop.run([ChatMessage.user("2+3?")])
    assert result == "2+3 = 5"
    assert loop.text_tool_calls == 1
    # the model's history shows a structured call and its result, as servers expect
    asked, answered = model.calls[1].messages[-2:]
    assert asked.role == "assistant" and asked.content == ""
    (call,) = asked.tool_calls
    assert (call.name, call.arguments) == ("add", {"a": 2, "b": 3})
    assert (answered.role, answered.tool_call_id, answered.content) == ("tool", call.id, "5")


async def test_a_text_that_does_not_validate_is_the_answer_and_not_counted() -> None:
    reply: Any = '{"name": "add", "arguments": {"a": "two", "b": 3}}'
    loop = AgentLoop(ScriptedModel([reply]), [add])
    assert await loop.run([ChatMessage.user("2+3?")]) == reply
    assert loop.text_tool_calls == 0


async def test_the_agent_counts_the_text_calls_of_all_its_tasks() -> None:
    written = '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 1}}\n</tool_call>'
    model = ScriptedModel([written, "2", written, "2"])
    agent = LLMAgent("llm-text", model=model, tools=[add])
    assert [await agent.ask("1+1?"), await agent.ask("1+1 again?")] == ["2", "2"]
    assert agent.text_tool_calls == 2


# What Qwen2.5-Coder-1.5B-Instruct under llama-server --jinja really answered to "What is
# 1234*5678?" with the math tool (temperature 0): the same call, as text, after its result.
QWEN_REPEATS = [
    '```json\n{\n  "name": "math",\n  "arguments": {\n    "expression": "1234*5678"\n  }\n}\n```',
    QWEN_FENCED,
    QWEN_BARE,
    "",
]


async def test_a_call_repeated_after_its_result_is_not_run_again_and_the_model_is_told() -> None:
    runs: list[str] = []

    @tool
    def math(expression: str) -> dict[str, int]:
        """Evaluate an arithmetic expression."""
        runs.append(expression)
        return {"value": 7006652}

    model = ScriptedModel([QWEN_REPEATS[0], QWEN_REPEATS[1], "1234*5678 is 7006652."])
    loop = AgentLoop(model, [math])
    assert await loop.run([ChatMessage.user("What is 1234*5678?")]) == "1234*5678 is 7006652."
    assert runs == ["1234*5678"]
    assert (loop.text_tool_calls, loop.repeated_calls) == (2, 1)
    reminded = model.calls[2].messages
    assert [m.role for m in reminded] == ["user", "assistant", "tool", "user"]
    assert '{"value":7006652}' in reminded[-1].content
    assert "without calling a tool again" in reminded[-1].content


async def test_repeats_still_count_as_rounds_so_a_model_that_only_repeats_fails() -> None:
    @tool
    def math(expression: str) -> int:
        """Evaluate an arithmetic expression."""
        return 7006652

    model = ScriptedModel([QWEN_BARE] * 4)
    loop = AgentLoop(model, [math], max_tool_rounds=3)
    with pytest.raises(ToolRoundsExceeded):
        await loop.run([ChatMessage.user("What is 1234*5678?")])
    assert loop.repeated_calls == 2


async def test_a_call_that_failed_may_be_made_again() -> None:
    attempts: list[int] = []

    @tool
    def math(expression: str) -> int:
        """Evaluate an arithmetic expression."""
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("busy")
        return 7006652

    model = ScriptedModel([QWEN_BARE, QWEN_BARE, "7006652"])
    loop = AgentLoop(model, [math])
    assert await loop.run([ChatMessage.user("What is 1234*5678?")]) == "7006652"
    assert (len(attempts), loop.repeated_calls) == (2, 0)
