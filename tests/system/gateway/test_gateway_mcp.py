"""``callboard gateway`` as an MCP server, driven by the official ``mcp`` SDK's client
over streamable HTTP and over stdio, against agents on a real nats-server.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from gateway_support import TOKEN_ENV, Mesh, Running, new_token
from mcp import ClientSession, StdioServerParameters, stdio_client, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError
from nats.aio.client import Client
from system_support import ROOT

from actors import AgentHost, SummarizeAgent

pytestmark = [pytest.mark.anyio, pytest.mark.system]


@asynccontextmanager
async def http_session(
    running: Running, on_message: Callable[[Any], Any] | None = None
) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {running.token}"}
    async with (
        httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(30, read=120)) as http,
        streamable_http_client(f"{running.url}/mcp", http_client=http) as (read, write, _),
        ClientSession(read, write, message_handler=on_message) as session,
    ):
        await session.initialize()
        yield session


def tool_names(listed: types.ListToolsResult) -> set[str]:
    return {tool.name for tool in listed.tools}


async def test_http_lists_the_exposed_live_capabilities_with_their_schemas(
    gateway: Running,
) -> None:
    async with http_session(gateway) as session:
        listed = await session.list_tools()
    # summarize is exposed but no agent serves it; echo is live but not exposed
    assert tool_names(listed) == {"math", "steps", "refuse"}
    tools = {t.name: t for t in listed.tools}
    assert tools["math"].inputSchema["type"] == "object"
    assert "expression" in tools["math"].inputSchema["properties"]
    assert tools["steps"].inputSchema["required"] == ["count"]
    assert tools["steps"].description == "Reports progress steps, then answers how many it did."
    # refuse takes any JSON value: its payload is the one argument "input"
    assert tools["refuse"].inputSchema["required"] == ["input"]


async def test_http_call_returns_the_agents_result(gateway: Running) -> None:
    async with http_session(gateway) as session:
        result = await session.call_tool("math", {"expression": "6*7"})
    assert not result.isError
    assert result.structuredContent == {"value": 42}
    assert isinstance(result.content[0], types.TextContent)
    assert result.content[0].text == '{"value":42}'


async def test_http_progress_events_become_progress_notifications(
    gateway: Running, mesh: Mesh
) -> None:
    seen: list[tuple[float, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, message))
        if len(seen) == 3:
            mesh.steps.released.set()  # the agent holds until every step was relayed

    async with http_session(gateway) as session:
        with anyio.fail_after(20):
            result = await session.call_tool(
                "steps", {"count": 3, "hold": True}, progress_callback=on_progress
            )
    assert result.structuredContent == {"done": 3}
    assert seen == [(1.0, "step 1 of 3"), (2.0, "step 2 of 3"), (3.0, "step 3 of 3")]


async def test_http_cancel_reaches_the_agent(gateway: Running, mesh: Mesh) -> None:
    progressed = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        progressed.set()

    failures: list[BaseException] = []
    async with http_session(gateway) as session:

        async def call() -> None:
            try:
                await session.call_tool(
                    "steps", {"count": 1, "hold": True}, progress_callback=on_progress
                )
            except McpError as exc:
                failures.append(exc)

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await progressed.wait()  # the agent runs the task and holds it
                # the SDK numbers requests 0 (initialize), 1, ...: the call is the last
                request_id = session._request_id - 1
                cancel = types.CancelledNotification(
                    params=types.CancelledNotificationParams(requestId=request_id, reason="no")
                )
                await session.send_notification(types.ClientNotification(cancel))
                await mesh.steps.cancelled.wait()
    assert not mesh.steps.released.is_set()
    assert len(failures) == 1, failures


async def test_http_the_callers_deadline_reaches_the_agent(gateway: Running, mesh: Mesh) -> None:
    async with http_session(gateway) as session:
        with anyio.fail_after(20):
            result = await session.call_tool(
                "steps", {"count": 0, "hold": True}, meta={"timeout": 0.5}
            )
            await mesh.steps.cancelled.wait()  # cut at the deadline, not left to run
    assert result.isError and result.structuredContent is not None
    assert result.structuredContent["error"]["code"] == 408


async def test_http_agent_errors_are_tool_errors_with_code_and_message(
    gateway: Running,
) -> None:
    async with http_session(gateway) as session:
        refused = await session.call_tool("refuse", {"input": "please"})
        bad = await session.call_tool("math", {"expression": 5})
        with pytest.raises(McpError, match="does not offer"):
            await session.call_tool("echo", {"x": 1})
    assert refused.isError
    assert refused.structuredContent == {
        "error": {"code": 418, "type": "teapot", "message": "the answer is no"}
    }
    assert isinstance(refused.content[0], types.TextContent)
    assert "418" in refused.content[0].text and "the answer is no" in refused.content[0].text
    assert bad.isError
    assert bad.structuredContent is not None
    assert bad.structuredContent["error"]["code"] == 400


async def test_http_requests_without_the_token_are_refused(gateway: Running) -> None:
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "intruder", "version": "0"},
        },
    }
    accept = {"Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(timeout=10) as http:
        none = await http.post(f"{gateway.url}/mcp", json=init, headers=accept)
        wrong = await http.post(
            f"{gateway.url}/mcp",
            json=init,
            headers={**accept, "Authorization": f"Bearer {new_token()}"},
        )
        card = await http.get(f"{gateway.url}/.well-known/agent-card.json")
        health = await http.get(f"{gateway.url}/healthz")
    assert (none.status_code, wrong.status_code, card.status_code) == (401, 401, 401)
    assert none.headers["www-authenticate"].startswith("Bearer")
    assert health.status_code == 200 and health.json()["status"] == "ok"


async def test_http_tool_list_follows_agents_coming_and_going(
    gateway: Running, nc: Client, prefix: str
) -> None:
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ServerNotification) and isinstance(
            message.root, types.ToolListChangedNotification
        ):
            changed.set()

    async with http_session(gateway, on_message) as session:
        assert "summarize" not in tool_names(await session.list_tools())
        with anyio.fail_after(20):
            async with AgentHost(nc, [SummarizeAgent("summarize-1")], prefix=prefix):
                await changed.wait()
                changed = anyio.Event()
                assert "summarize" in tool_names(await session.list_tools())
            await changed.wait()  # it said offline
        assert "summarize" not in tool_names(await session.list_tools())


async def test_stdio_lists_calls_relays_progress_and_errors(
    mesh: Mesh, config: Path, cli_env: dict[str, str], tmp_path: Path
) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "orchestrator.cli", "gateway", str(config), "--stdio"],
        env={k: v for k, v in cli_env.items() if k != TOKEN_ENV},
        cwd=ROOT,
    )
    seen: list[str | None] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(message)
        if len(seen) == 2:
            mesh.steps.released.set()

    with (tmp_path / "stderr.log").open("w") as errlog:
        with anyio.fail_after(60):
            async with (
                stdio_client(params, errlog=errlog) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                listed = await session.list_tools()
                math = await session.call_tool("math", {"expression": "1234*5678"})
                steps = await session.call_tool(
                    "steps", {"count": 2, "hold": True}, progress_callback=on_progress
                )
                refused = await session.call_tool("refuse", {"input": 1})
    assert tool_names(listed) == {"math", "steps", "refuse"}
    assert math.structuredContent == {"value": 7006652}
    assert steps.structuredContent == {"done": 2}
    assert seen == ["step 1 of 2", "step 2 of 2"]
    assert refused.isError and refused.structuredContent is not None
    assert refused.structuredContent["error"]["code"] == 418


INTEROP = ROOT / "tests" / "interop"


def _require_node() -> str:
    """node, with the interop packages installed; skip without them, but never on CI."""
    node = shutil.which("node")
    installed = (INTEROP / "node_modules" / "@modelcontextprotocol" / "sdk").is_dir()
    if node is not None and installed:
        return node
    why = "node and `npm ci --prefix tests/interop` are needed for the Node.js MCP client"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} (CI=true: the interop test must run on CI)")
    pytest.skip(why)


async def test_node_mcp_sdk_client_lists_calls_cancels_and_is_refused_without_token(
    gateway: Running, mesh: Mesh
) -> None:
    node = _require_node()
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [node, str(INTEROP / "mcp_client.mjs"), gateway.url, gateway.token],
            cwd=INTEROP,
            check=False,
        )
        await mesh.steps.cancelled.wait()  # the client's abort reached the agent
    assert done.returncode == 0, done.stderr.decode()
    out = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert out["tools"] == ["math", "refuse", "steps"]
    assert "expression" in out["math_schema"]["properties"]
    assert out["math"]["structuredContent"] == {"value": 42}
    assert out["math"].get("isError", False) is False
    assert out["refuse"]["isError"] is True
    assert out["refuse"]["structuredContent"]["error"] == {
        "code": 418,
        "type": "teapot",
        "message": "the answer is no",
    }
    assert out["progress"] == [{"progress": 1, "message": "step 1 of 1"}]
    assert out["cancel"] != "not cancelled"
    assert "401" in out["without_token"]
    assert not mesh.steps.released.is_set()
