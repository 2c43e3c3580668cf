"""The LLM agent on a real bus: other agents' capabilities as tools, progress, errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import msgspec
import pytest
from nats.aio.client import Client
from nats.aio.subscription import Subscription

from actors import AgentHost, EchoAgent, LLMAgent, MathAgent
from actors.llm.models import (
    ChatMessage,
    ModelResponseError,
    ModelUnavailable,
    ScriptedCall,
    ScriptedModel,
    ToolCall,
    tool_call,
)
from bus import AgentError, TaskClient

pytestmark = pytest.mark.anyio

Event = dict[str, Any]


def calls(*requested: ToolCall) -> ChatMessage:
    """An assistant reply that asks for these tool calls."""
    return ChatMessage.assistant(tool_calls=requested)


def tool_result(call: ScriptedCall) -> Any:
    """The result of the last tool call, as the model received it."""
    message = call.messages[-1]
    assert message.role == "tool"
    return msgspec.json.decode(message.content)


def tool_names(call: ScriptedCall) -> str:
    return ",".join(sorted(t.name for t in call.tools))


async def events_until(
    sub: Subscription, done: Callable[[list[Event]], bool], timeout: float = 5.0
) -> list[Event]:
    events: list[Event] = []
    with anyio.fail_after(timeout):
        async for msg in sub.messages:
            events.append(msgspec.json.decode(msg.data))
            if done(events):
                return events
    raise AssertionError("the subscription ended")


async def test_the_model_calls_math_over_the_bus(nc: Client, prefix: str) -> None:
    model = ScriptedModel(
        [
            calls(tool_call("math", expression="6*7")),
            lambda call: f"6*7 is {tool_result(call)['value']}",
        ]
    )
    llm = LLMAgent("llm-1", model=model, capability="ask", delegate=["math"])
    status = await nc.subscribe(f"{prefix}.status.>")
    async with AgentHost(nc, [MathAgent("m-1"), llm], prefix=prefix):
        reply = await TaskClient(nc, prefix=prefix).request("ask", "what is 6*7?", task_id="q-1")
        assert (reply.payload, reply.sender) == ("6*7 is 42", "llm-1")
        events = await events_until(
            status,
            lambda evs: any(e["state"] == "completed" and e["agent"] == "llm-1" for e in evs),
        )
    (math_tool,) = model.calls[0].tools
    assert math_tool.name == "math"
    assert math_tool.parameters["required"] == ["expression"]
    assert math_tool.description == "Evaluate an arithmetic expression such as 2*(3+4)."
    math_events = {e["state"]: e for e in events if e["agent"] == "m-1" and "task_id" in e}
    assert set(math_events) == {"accepted", "started", "completed"}
    assert math_events["accepted"]["sender"] == "llm-1"
    assert len({e["task_id"] for e in math_events.values()}) == 1
    assert math_events["accepted"]["task_id"] != "q-1"
    progress = [e for e in events if e["agent"] == "llm-1" and e["state"] == "progress"]
    calling = [e for e in progress if e["message"] == "calling math"]
    assert calling[0]["task_id"] == "q-1"
    assert calling[0]["data"]["arguments"] == {"expression": "6*7"}


async def test_plain_strings_and_prompt_objects_are_both_tasks(nc: Client, prefix: str) -> None:
    model = ScriptedModel([lambda call: call.messages[-1].content] * 2)
    async with AgentHost(nc, [LLMAgent("llm-1", model=model)], prefix=prefix):
        plain = await nc.request(f"{prefix}.task.chat", b'"hi"', timeout=5)
        assert msgspec.json.decode(plain.data) == "hi"
        rich = await nc.request(
            f"{prefix}.task.chat", b'{"prompt": "sum", "context": [1, 2]}', timeout=5
        )
        assert msgspec.json.decode(rich.data) == "sum\n\nContext:\n[1,2]"


async def test_delegate_true_offers_every_live_capability_but_its_own(
    nc: Client, prefix: str
) -> None:
    model = ScriptedModel([tool_names] * 3)
    llm = LLMAgent("llm-1", model=model, delegate=True, discovery_wait=0.2)
    async with AgentHost(nc, [MathAgent("m-1"), EchoAgent("e-1"), llm], prefix=prefix) as host:
        client = TaskClient(nc, prefix=prefix)
        assert (await client.request("chat", "tools?")).payload == "echo,math"
        await host.add(EchoAgent("e-2", capabilities=["shout"]))
        # the catalog is cached: the new capability shows only once it is refreshed
        assert (await client.request("chat", "tools?")).payload == "echo,math"
        llm.catalog.clear()
        assert (await client.request("chat", "tools?")).payload == "echo,math,shout"
    echo = next(t for t in model.calls[0].tools if t.name == "echo")
    assert echo.parameters["required"] == ["input"]  # echo takes any JSON: wrapped


async def test_a_failed_delegated_call_is_fed_back_and_the_agent_answers(
    nc: Client, prefix: str
) -> None:
    model = ScriptedModel(
        [
            calls(tool_call("math", expression="1/0")),
            lambda call: msgspec.json.encode(tool_result(call)).decode(),
        ]
    )
    llm = LLMAgent("llm-1", model=model, delegate=["math"])
    async with AgentHost(nc, [MathAgent("m-1"), llm], prefix=prefix):
        reply = await TaskClient(nc, prefix=prefix).request("chat", "divide by zero")
    error = msgspec.json.decode(reply.payload)["error"]
    assert (error["code"], error["type"]) == (400, "bad_input")
    assert "zero" in error["message"]


async def test_a_delegation_cycle_is_fed_back_as_409_instead_of_hanging(
    nc: Client, prefix: str
) -> None:
    model_a = ScriptedModel(
        [calls(tool_call("b", input="ask a")), lambda call: f"a heard: {tool_result(call)}"]
    )
    model_b = ScriptedModel(
        [calls(tool_call("a", input="back to a")), lambda call: call.messages[-1].content]
    )
    agents = [
        LLMAgent("llm-a", model=model_a, capability="a", delegate=["b"]),
        LLMAgent("llm-b", model=model_b, capability="b", delegate=["a"]),
    ]
    async with AgentHost(nc, agents, prefix=prefix):
        with anyio.fail_after(10):
            reply = await TaskClient(nc, prefix=prefix).request("a", "start", timeout=10)
    assert reply.payload.startswith("a heard: ")
    assert '"code":409' in reply.payload
    assert "delegation_cycle" in reply.payload
    assert "llm-a -> llm-b -> llm-a" in reply.payload


async def test_streamed_tokens_become_few_progress_events(nc: Client, prefix: str) -> None:
    text = "".join(f"word{i} " for i in range(50))
    model = ScriptedModel([text], chunk=2)
    llm = LLMAgent("llm-1", model=model, progress_interval=60.0)
    status = await nc.subscribe(f"{prefix}.status.llm-1.>")
    async with AgentHost(nc, [llm], prefix=prefix):
        reply = await TaskClient(nc, prefix=prefix).request("chat", "talk")
        assert reply.payload == text
        events = await events_until(status, lambda evs: evs[-1]["state"] == "completed")
    progress = [e["data"] for e in events if e["state"] == "progress"]
    chunks = len(text) // 2
    assert 1 <= len(progress) <= 3 < chunks
    assert "".join(p["text"] for p in progress) == text
    assert progress[-1] == {"round": 1, "text": progress[-1]["text"], "chars": len(text)}


async def test_a_model_error_fails_the_task_and_the_agent_keeps_serving(
    nc: Client, prefix: str
) -> None:
    model = ScriptedModel(
        [ModelUnavailable("ollama is down"), ModelResponseError("truncated answer"), "fine"]
    )
    async with AgentHost(nc, [LLMAgent("llm-1", model=model)], prefix=prefix):
        client = TaskClient(nc, prefix=prefix)
        with pytest.raises(AgentError, match="ollama is down") as down:
            await client.request("chat", "one")
        assert (down.value.code, down.value.type) == (503, "model_unavailable")
        with pytest.raises(AgentError, match="truncated answer") as bad:
            await client.request("chat", "two")
        assert (bad.value.code, bad.value.type) == (502, "bad_model_response")
        assert (await client.request("chat", "three")).payload == "fine"
