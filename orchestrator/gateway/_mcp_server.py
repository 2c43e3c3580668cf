"""The gateway as an MCP server (the official ``mcp`` SDK's low-level server).

Every exposed, live capability is a tool. A ``tools/call`` is a task on the
bus: the caller's deadline is ``_meta.timeout`` (seconds, bounded by the
config), an MCP ``notifications/cancelled`` cancels the handler and with it the
task (callboard's cancel), and the task's ``progress`` events become
``notifications/progress`` when the caller sent a ``progressToken``. An agent's
error is a tool error (``isError``) whose text and ``structuredContent`` carry
its code, type and message. When agents come and go, every session that has
listed the tools is sent ``notifications/tools/list_changed``.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

import msgspec
from mcp import types
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp.server.session import ServerSession
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import McpError
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from bus import CallboardError, Progress

from ._events import RelayedEvent
from ._gateway import Gateway, NotExposed

__all__ = [
    "MCP_PATH",
    "TIMEOUT_META_KEY",
    "build_mcp_server",
    "mcp_initialization_options",
    "mcp_route",
]

log = logging.getLogger("callboard.gateway.mcp")

TIMEOUT_META_KEY = "timeout"
"""The ``_meta`` key of a ``tools/call`` that gives the caller's deadline in seconds."""
MCP_PATH = "/mcp"
"""Where MCP's streamable HTTP is served."""
_encoder = msgspec.json.Encoder()


class _StreamableHttp:
    """The session manager as an ASGI app (a route endpoint that is not a function)."""

    def __init__(self, manager: StreamableHTTPSessionManager) -> None:
        self.manager = manager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.manager.handle_request(scope, receive, send)


def mcp_route(manager: StreamableHTTPSessionManager) -> Route:
    """The route of MCP's streamable HTTP transport."""
    return Route(MCP_PATH, endpoint=_StreamableHttp(manager))


def mcp_initialization_options(server: Server[Any, Any]) -> InitializationOptions:
    """What the server says it can do: tools, whose list changes."""
    return server.create_initialization_options(NotificationOptions(tools_changed=True))


def build_mcp_server(gateway: Gateway) -> Server[Any, Any]:
    """An MCP server whose tools are the gateway's (one for every transport)."""
    server: Server[Any, Any] = Server(
        "callboard",
        instructions="Each tool is a capability of a callboard agent mesh; a call is a task.",
    )
    sessions: weakref.WeakSet[ServerSession] = weakref.WeakSet()

    def remember_session() -> ServerSession | None:
        try:
            session: ServerSession = server.request_context.session
        except LookupError:
            return None
        sessions.add(session)
        return session

    async def list_tools(_request: types.ListToolsRequest) -> types.ServerResult:
        remember_session()
        tools = [
            types.Tool(name=t.name, description=t.description, inputSchema=t.input_schema)
            for t in gateway.tools
        ]
        return types.ServerResult(types.ListToolsResult(tools=tools))

    async def call_tool(request: types.CallToolRequest) -> types.ServerResult:
        session = remember_session()
        params = request.params
        meta = params.meta
        extra = (meta.model_extra or {}) if meta is not None else {}
        timeout = extra.get(TIMEOUT_META_KEY)
        token = meta.progressToken if meta is not None else None
        sent = 0

        async def on_event(event: RelayedEvent) -> None:
            nonlocal sent
            if token is None or session is None or not isinstance(event, Progress):
                return
            sent += 1
            message = event.message or (
                _encoder.encode(event.data).decode() if event.data is not None else None
            )
            await session.send_progress_notification(
                token, float(sent), message=message, related_request_id=request_id()
            )

        def request_id() -> str | None:
            try:
                return str(server.request_context.request_id)
            except LookupError:
                return None

        try:
            result = await gateway.call(
                params.name,
                params.arguments or {},
                protocol="mcp",
                timeout=float(timeout) if isinstance(timeout, int | float) else None,
                on_event=on_event,
            )
        except NotExposed as exc:
            raise McpError(types.ErrorData(code=types.INVALID_PARAMS, message=exc.message)) from exc
        except CallboardError as exc:
            return types.ServerResult(_tool_error(exc))
        text = _encoder.encode(result).decode()
        return types.ServerResult(
            types.CallToolResult(
                content=[types.TextContent(type="text", text=text)],
                structuredContent=result if isinstance(result, dict) else None,
                isError=False,
            )
        )

    server.request_handlers[types.ListToolsRequest] = list_tools
    server.request_handlers[types.CallToolRequest] = call_tool

    async def tools_changed() -> None:
        for session in list(sessions):
            try:
                await session.send_tool_list_changed()
            except Exception as exc:  # a session that went away
                log.debug("could not tell a session the tools changed: %s", exc)
                sessions.discard(session)

    gateway.on_tools_changed.append(tools_changed)
    return server


def _tool_error(exc: CallboardError) -> types.CallToolResult:
    """An agent's (or the dispatch's) error as an MCP tool error."""
    error = {"code": exc.code, "type": exc.type, "message": exc.message}
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=f"error {exc.code} ({exc.type}): {exc}")],
        structuredContent={"error": error},
        isError=True,
    )
