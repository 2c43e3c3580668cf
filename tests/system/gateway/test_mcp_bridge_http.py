"""``type = "mcp"`` over streamable HTTP with a bearer token: the bridge takes the
gateway's own MCP endpoint (a real ``callboard gateway`` process) as its server.
"""

from __future__ import annotations

import anyio
import pytest
from gateway_support import Running
from nats.aio.client import Client

from actors import AgentHost
from actors.bridges._mcp import McpBridge
from bus import AgentError, TaskClient

pytestmark = [pytest.mark.anyio, pytest.mark.system]


async def test_an_http_mcp_server_behind_a_token_is_bridged(
    gateway: Running, nc: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLBOARD_TEST_MCP_TOKEN", gateway.token)
    bridge = await anyio.to_thread.run_sync(
        lambda: McpBridge(
            "via-1",
            url=f"{gateway.url}/mcp",
            token_env="CALLBOARD_TEST_MCP_TOKEN",
            tools=["math", "refuse"],
            prefix="via-",
        )
    )
    try:
        async with AgentHost(nc, [bridge], prefix="bridged-mcp"):
            client = TaskClient(nc, prefix="bridged-mcp")
            reply = await client.request("via-math", {"expression": "6*7"}, timeout=30)
            with pytest.raises(AgentError) as refused:
                await client.request("via-refuse", {"input": "x"}, timeout=30)
    finally:
        await bridge.aclose()
    assert reply.payload == {"value": 42}
    assert (refused.value.code, refused.value.type) == (500, "tool_error")
    assert "the answer is no" in refused.value.message
