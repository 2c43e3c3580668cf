"""The LLM agent loop with a scripted model and no bus: tools, rounds, output, errors."""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
import pytest

from actors import DaemonConfig, build_agents
from actors.llm import LLMAgent, Prompt, TokenProgress, ToolRoundsExceeded, tool
from actors.llm.models import (
    ChatMessage,
    ModelResponseError,
    ModelUnavailable,
    ScriptedCall,
    ScriptedModel,
    ScriptEntry,
    ToolCall,
    tool_call,
)
from bus import AgentMessage, ConfigError, MessageType

pytestmark = pytest.mark.anyio


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
async def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@tool
def explode(reason: str) -> str:
    """Always fails."""
    raise RuntimeError(f"boom: {reason}")


class Answer(msgspec.Struct):
    value: int


def agent_with(script: list[ScriptEntry], **options: Any) -> tuple[LLMAgent, ScriptedModel]:
    model = ScriptedModel(script)
    options.setdefault("tools", [add, multiply, explode])
    return LLMAgent("llm-test", model=model, system_prompt="Be exact.", **options), model


def calls(*requested: ToolCall) -> ChatMessage:
    """An assistant reply that asks for these tool calls."""
    return ChatMessage.assistant(tool_calls=requested)


def last_tool_result(call: ScriptedCall) -> Any:
    message = call.messages[-1]
    assert message.role == "tool"
    return msgspec.json.decode(message.content)


def echo_last_tool_result(call: ScriptedCall) -> str:
    return msgspec.json.encode(last_tool_result(call)).decode()


async def test_two_tool_rounds_then_an_answer() -> None:
    agent, model = agent_with(
        [
            calls(tool_call("add", a=2, b=3)),
            lambda call: calls(tool_call("multiply", a=last_tool_result(call), b=4)),
            lambda call: f"the answer is {last_tool_result(call)}",
        ]
    )
    assert await agent.ask("(2+3)*4?") == "the answer is 20"
    first, second, third = model.calls
    assert [m.role for m in first.messages] == ["system", "user"]
    assert first.messages[0].content == "Be exact."
    assert [t.name for t in first.tools] == ["add", "multiply", "explode"]
    assert [m.role for m in third.messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
    ]
    assert second.messages[-1].content == "5"
    assert third.messages[-1].content == "20"
    assert model.remaining == 0


async def test_a_tool_message_answers_its_call_by_id() -> None:
    call = tool_call("add", a=1, b=1)
    agent, model = agent_with([calls(call), "2"])
    assert await agent.ask("1+1") == "2"
    tool_message = model.calls[1].messages[-1]
    assert (tool_message.tool_call_id, tool_message.name, tool_message.content) == (
        call.id,
        "add",
        "2",
    )


async def test_bad_arguments_are_fed_back_to_the_model() -> None:
    agent, _ = agent_with([calls(tool_call("add", a="two", b=2)), echo_last_tool_result])
    answer = msgspec.json.decode(await agent.ask("2+2"))
    assert answer["error"]["code"] == 400
    assert answer["error"]["type"] == "bad_arguments"
    assert "$.a" in answer["error"]["message"]


async def test_an_unknown_tool_is_fed_back_to_the_model() -> None:
    agent, _ = agent_with([calls(tool_call("divide", a=1, b=2)), echo_last_tool_result])
    answer = msgspec.json.decode(await agent.ask("1/2"))
    assert answer["error"]["code"] == 404
    assert answer["error"]["type"] == "unknown_tool"
    assert "add, multiply, explode" in answer["error"]["message"]


async def test_a_tool_that_raises_is_fed_back_and_the_task_still_answers() -> None:
    agent, _ = agent_with(
        [
            calls(tool_call("explode", reason="test")),
            lambda call: f"sorry: {last_tool_result(call)['error']['message']}",
        ]
    )
    assert await agent.ask("go") == "sorry: RuntimeError: boom: test"


async def test_parallel_calls_of_one_reply_run_together_and_keep_their_order() -> None:
    second_started = anyio.Event()

    @tool
    async def slow(tag: str) -> str:
        """Waits for the fast one: only finishes if both run at once."""
        await second_started.wait()
        return f"slow-{tag}"

    @tool
    async def fast(tag: str) -> str:
        """Returns at once."""
        second_started.set()
        return f"fast-{tag}"

    reply = ChatMessage.assistant(
        tool_calls=[tool_call("slow", tag="1"), tool_call("fast", tag="2")]
    )
    agent, model = agent_with([reply, "ok"], tools=[slow, fast])
    with anyio.fail_after(5):
        assert await agent.ask("both") == "ok"
    results = [m.content for m in model.calls[1].messages if m.role == "tool"]
    assert results == ['"slow-1"', '"fast-2"']


async def test_a_model_still_calling_tools_at_the_limit_fails_the_task() -> None:
    agent, model = agent_with([calls(tool_call("add", a=1, b=1))] * 3, max_tool_rounds=2)
    with pytest.raises(ToolRoundsExceeded) as info:
        await agent.ask("loop forever")
    assert (info.value.code, info.value.type) == (500, "tool_rounds_exceeded")
    assert "after 2 rounds" in info.value.message
    assert "max_tool_rounds" in info.value.message
    assert len(model.calls) == 3


SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "integer"}},
    "required": ["answer"],
}


async def test_an_answer_that_matches_the_output_schema_is_returned_decoded() -> None:
    agent, model = agent_with(['{"answer": 42}'], output_schema=SCHEMA)
    assert await agent.ask("?") == {"answer": 42}
    assert model.calls[0].output_schema == SCHEMA


async def test_an_invalid_answer_is_repaired_once() -> None:
    agent, model = agent_with(
        ['{"reply": 42}', '```json\n{"answer": 42}\n```'], output_schema=SCHEMA
    )
    assert await agent.ask("?") == {"answer": 42}
    repair = model.calls[1].messages[-1]
    assert repair.role == "user"
    assert "lacks required key(s): answer" in repair.content


async def test_an_answer_invalid_twice_fails_with_502() -> None:
    agent, _ = agent_with(["forty-two", "[42]"], output_schema=SCHEMA)
    with pytest.raises(ModelResponseError) as info:
        await agent.ask("?")
    assert info.value.code == 502
    assert "expected JSON of type object, got array" in info.value.message


async def test_an_output_type_decodes_into_it() -> None:
    agent, model = agent_with(['{"value": "x"}', '{"value": 7}'], output_type=Answer)
    assert await agent.ask("?") == Answer(value=7)
    assert model.calls[0].output_schema is not None
    assert model.calls[0].output_schema["required"] == ["value"]
    assert "Expected `int`, got `str`" in model.calls[1].messages[-1].content


async def test_a_model_error_propagates_with_its_code() -> None:
    agent, _ = agent_with([calls(tool_call("add", a=1, b=2)), ModelUnavailable("server down")])
    with pytest.raises(ModelUnavailable, match="server down") as info:
        await agent.ask("1+2")
    assert info.value.code == 503


async def test_handle_takes_a_string_or_a_prompt_with_context() -> None:
    agent, model = agent_with(["a", "b"])
    task = AgentMessage(type=MessageType.TASK, task_id="t-1", payload="hello")
    assert await agent.handle(task) == "a"
    prompt = Prompt(prompt="Sum these.", context={"numbers": [1, 2]})
    task = AgentMessage(type=MessageType.TASK, task_id="t-2", payload=prompt)
    assert await agent.handle(task) == "b"
    assert model.calls[0].messages[1].content == "hello"
    assert model.calls[1].messages[1].content == 'Sum these.\n\nContext:\n{"numbers":[1,2]}'


async def test_a_bus_tool_without_a_bus_is_fed_back() -> None:
    agent, model = agent_with(
        [calls(tool_call("math", expression="1")), echo_last_tool_result],
        tools=[],
        delegate=["math"],
    )
    answer = msgspec.json.decode(await agent.ask("1"))
    assert [t.name for t in model.calls[0].tools] == ["math"]
    assert answer["error"]["type"] == "tool_unavailable"


def test_discovery_publishes_the_input_and_output_schemas() -> None:
    agent, _ = agent_with([], output_schema=SCHEMA, capability="ask", keywords=["question"])
    (spec,) = agent.capability_specs
    assert (spec.name, spec.keywords) == ("ask", ("question",))
    assert spec.output_schema() == SCHEMA
    assert [s.get("type") for s in spec.input_schema()["anyOf"]] == ["string", None]
    plain, _ = agent_with([])
    assert plain.capability_specs[0].output_schema() == {"type": "string"}


async def test_streamed_text_is_reported_at_most_once_per_interval() -> None:
    now = [0.0]
    events: list[dict[str, Any]] = []

    async def report(message: str, data: Any) -> None:
        events.append(data)

    stream = TokenProgress(report, interval=1.0, clock=lambda: now[0])
    stream.start_turn(1)
    for piece in ["a", "b", "c", "d"]:
        await stream.on_token(piece)
        now[0] += 0.4
    await stream.flush()
    assert events == [
        {"round": 1, "text": "a", "chars": 1},
        {"round": 1, "text": "bcd", "chars": 4},
    ]


def test_the_daemon_config_builds_llm_agents_and_rejects_bad_model_tables() -> None:
    def build(options: dict[str, Any]) -> None:
        spec = {"type": "llm", "id": "assistant", "options": options}
        build_agents(msgspec.convert({"agents": [spec]}, DaemonConfig))

    with pytest.raises(ConfigError, match="invalid model settings"):
        build({"model": {"model": "x", "provider": "nope"}})
    with pytest.raises(ConfigError, match="invalid model settings"):
        build({"model": {"name": "x"}})
    with pytest.raises(ConfigError, match="model"):
        build({"system_prompt": "hi"})
    with pytest.raises(ConfigError, match="cannot import"):
        build({"model": {"model": "x"}, "tools": ["no_such_module_xyz:f"]})


def test_bad_options_fail_at_construction() -> None:
    model = ScriptedModel([])
    with pytest.raises(ConfigError, match="not both"):
        LLMAgent(model=model, output_schema=SCHEMA, output_type=Answer)
    with pytest.raises(ConfigError, match="two tools are named 'add'"):
        LLMAgent(model=model, tools=[add, add])
    with pytest.raises(ConfigError, match="max_tool_rounds"):
        LLMAgent(model=model, max_tool_rounds=0)
    with pytest.raises(ConfigError, match="a list of capabilities"):
        LLMAgent(model=model, delegate="math")
    with pytest.raises(ConfigError, match="model must be"):
        LLMAgent(model=42)  # type: ignore[arg-type]
