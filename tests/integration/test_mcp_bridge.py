"""``type = "mcp"``: the tools of an MCP server (written with the ``mcp`` SDK, run as
a real stdio process) served as capabilities on a real bus, and called by an LLM
agent (scripted model) like any capability.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from nats.aio.client import Client

from actors import AgentHost, LLMAgent, build_agents, load_config
from actors.bridges._mcp import McpBridge
from actors.llm.models import ChatMessage, ScriptedCall, ScriptedModel, tool_call
from bus import AgentError, ConfigError, TaskClient
from bus.micro import discover_capabilities

pytestmark = pytest.mark.anyio

SERVER = Path(__file__).resolve().parents[1] / "mcp_tool_server.py"
COMMAND = [sys.executable, str(SERVER)]


@pytest.fixture
async def bridge() -> AsyncIterator[McpBridge]:
    agent = await anyio.to_thread.run_sync(
        lambda: McpBridge("tools-1", command=COMMAND, tools=["add", "count", "broken"])
    )
    try:
        yield agent
    finally:
        await agent.aclose()


async def test_bridged_tools_are_capabilities_with_their_schemas(
    nc: Client, prefix: str, bridge: McpBridge
) -> None:
    async with AgentHost(nc, [bridge], prefix=prefix):
        client = TaskClient(nc, prefix=prefix)
        added = await client.request("add", {"a": 2, "b": 40}, timeout=20)
        found = await discover_capabilities(nc, client.subjects, wait=0.3)
    assert added.payload == {"result": 42}
    assert added.sender == "tools-1"
    schemas = {c.name: c for c in found}
    assert set(schemas) == {"add", "count", "broken"}  # shout was not chosen
    assert schemas["add"].input_schema["properties"].keys() == {"a", "b"}
    assert schemas["add"].input_schema["required"] == ["a", "b"]
    assert schemas["add"].description == "Add two integers."


async def test_bad_arguments_and_tool_errors_fail_the_task_and_the_bridge_serves_on(
    nc: Client, prefix: str, bridge: McpBridge
) -> None:
    async with AgentHost(nc, [bridge], prefix=prefix):
        client = TaskClient(nc, prefix=prefix)
        with pytest.raises(AgentError) as bad:
            await client.request("add", {"a": "two", "b": 40}, timeout=20)
        with pytest.raises(AgentError) as not_object:
            await client.request("add", [1, 2], timeout=20)
        with pytest.raises(AgentError) as broken:
            await client.request("broken", {}, timeout=20)
        after = await client.request("add", {"a": 1, "b": 1}, timeout=20)
    assert bad.value.code == 400 and "a: 'two' is not of type 'integer'" in bad.value.message
    assert not_object.value.code == 400
    assert (broken.value.code, broken.value.type) == (500, "tool_error")
    assert "broken on purpose" in broken.value.message
    assert after.payload == {"result": 2}


async def test_tool_progress_becomes_progress_events(
    nc: Client, prefix: str, bridge: McpBridge
) -> None:
    progress = await nc.subscribe(f"{prefix}.status.tools-1.progress")
    async with AgentHost(nc, [bridge], prefix=prefix):
        reply = await TaskClient(nc, prefix=prefix).request("count", {"to": 3}, timeout=20)
        events = [msgspec.json.decode((await progress.next_msg(5)).data) for _ in range(3)]
    assert reply.payload == {"result": "counted to 3"}
    assert [e["message"] for e in events] == ["counted 1", "counted 2", "counted 3"]
    assert [e["data"] for e in events] == [{"progress": n, "total": 3} for n in (1, 2, 3)]


async def test_an_llm_agent_calls_a_bridged_tool_over_the_bus(
    nc: Client, prefix: str, bridge: McpBridge
) -> None:
    def answer(call: ScriptedCall) -> str:
        result: Any = msgspec.json.decode(call.messages[-1].content)
        return f"1234+5678 is {result['result']}"

    model = ScriptedModel(
        [ChatMessage.assistant(tool_calls=(tool_call("add", a=1234, b=5678),)), answer]
    )
    llm = LLMAgent("llm-1", model=model, capability="ask", delegate=["add"])
    async with AgentHost(nc, [bridge, llm], prefix=prefix):
        reply = await TaskClient(nc, prefix=prefix).request("ask", "1234+5678?", timeout=30)
    assert reply.payload == "1234+5678 is 6912"
    (offered,) = model.calls[0].tools
    assert offered.name == "add"
    assert offered.parameters["properties"].keys() == {"a", "b"}


def test_the_daemon_config_builds_an_mcp_bridge(tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    command = ", ".join(f'"{part}"' for part in COMMAND)
    config.write_text(
        f'[[agents]]\ntype = "mcp"\nid = "tools"\n'
        f'options = {{ command = [{command}], tools = ["shout"], prefix = "mcp-" }}\n'
    )
    (agent,) = build_agents(load_config(config))
    try:
        assert isinstance(agent, McpBridge)
        assert agent.capability_names == ("mcp-shout",)
    finally:
        agent.server.close()


def test_a_missing_tool_is_a_config_error_naming_what_is_offered() -> None:
    with pytest.raises(ConfigError, match=r"no tool nope .*offers add, broken, count, shout"):
        McpBridge("tools-2", command=COMMAND, tools=["nope"])
