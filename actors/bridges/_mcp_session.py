"""One MCP client session held open in a thread of its own, for a bridge agent.

An agent is built synchronously from its config (``build_agent``) but must
know its capabilities, so the session to the MCP server is opened, and its
tools listed, before the constructor returns. The session lives in an anyio
``BlockingPortal``: an event loop in a thread, where the SDK's task groups are
entered and left by one task. Calls from the agent's loop are futures of that
portal; cancelling one cancels the call there.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractContextManager, asynccontextmanager
from typing import Any

import anyio
import anyio.from_thread
import httpx
from mcp import ClientSession, StdioServerParameters, stdio_client, types
from mcp.client.streamable_http import streamable_http_client

from bus import ConfigError

__all__ = ["McpServerSession", "ProgressReport"]

log = logging.getLogger("callboard.bridges.mcp")

ProgressReport = Callable[[float, float | None, str | None], None]
"""Told (progress, total, message) of each progress notification, from the session's thread."""


@asynccontextmanager
async def _open(
    command: Sequence[str] | None,
    url: str | None,
    env: Mapping[str, str] | None,
    headers: Mapping[str, str],
    timeout: float,
) -> AsyncIterator[ClientSession]:
    if command:
        params = StdioServerParameters(
            command=command[0], args=list(command[1:]), env=dict(env) if env else None
        )
        # the server's stderr is the daemon's: its log lines land in the daemon's log
        async with (
            stdio_client(params, errlog=sys.stderr) as (read, write),
            ClientSession(read, write) as session,
        ):
            with anyio.fail_after(timeout):
                await session.initialize()
            yield session
        return
    assert url is not None
    limits = httpx.Timeout(30.0, read=300.0)
    async with (
        httpx.AsyncClient(headers=dict(headers), timeout=limits) as http,
        streamable_http_client(url, http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        with anyio.fail_after(timeout):
            await session.initialize()
        yield session


class McpServerSession:
    """A session to one MCP server (a stdio command or a streamable HTTP URL).

    Args:
        command: the server's command line (stdio); or
        url: its streamable HTTP endpoint.
        env: extra environment of the command.
        headers: HTTP headers (e.g. ``Authorization``) for a URL.
        open_timeout: seconds to start, initialize and list the tools.

    Attributes:
        tools: the server's tools, as it listed them at start.

    Raises:
        ConfigError: neither or both of command and url, or the server could
            not be started or listed in time.
    """

    def __init__(
        self,
        *,
        command: Sequence[str] | None = None,
        url: str | None = None,
        env: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        open_timeout: float = 30.0,
    ) -> None:
        if bool(command) == bool(url):
            raise ConfigError("an mcp bridge needs either `command` (stdio) or `url` (HTTP)")
        self.where = " ".join(command) if command else str(url)
        self._portal_cm = anyio.from_thread.start_blocking_portal(name="callboard-mcp")
        self._portal = self._portal_cm.__enter__()
        self._session_cm: AbstractContextManager[ClientSession] | None = None
        try:
            self._session_cm = self._portal.wrap_async_context_manager(
                _open(command, url, env, headers or {}, open_timeout)
            )
            self._session = self._session_cm.__enter__()
            self.tools: list[types.Tool] = self._portal.call(self._list, open_timeout)
        except BaseException as exc:
            self.close()
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"cannot reach the MCP server {self.where}: {exc}") from exc

    async def _list(self, timeout: float) -> list[types.Tool]:
        tools: list[types.Tool] = []
        cursor: str | None = None
        with anyio.fail_after(timeout):
            while True:
                page = await self._session.list_tools(
                    params=types.PaginatedRequestParams(cursor=cursor) if cursor else None
                )
                tools.extend(page.tools)
                cursor = page.nextCursor
                if not cursor:
                    return tools

    async def call(
        self, name: str, arguments: dict[str, Any], on_progress: ProgressReport | None
    ) -> types.CallToolResult:
        """Call one tool from the agent's loop; cancelling this cancels the call."""

        async def progress(progress: float, total: float | None, message: str | None) -> None:
            if on_progress is not None:
                on_progress(progress, total, message)

        async def call_there() -> types.CallToolResult:
            return await self._session.call_tool(name, arguments, progress_callback=progress)

        return await asyncio.wrap_future(self._portal.start_task_soon(call_there))

    def close(self) -> None:
        """End the session (and a stdio server's process), then the portal's thread."""
        try:
            if self._session_cm is not None:
                cm, self._session_cm = self._session_cm, None
                try:
                    cm.__exit__(None, None, None)
                except Exception as exc:
                    log.debug("closing the MCP session to %s failed: %s", self.where, exc)
        finally:
            self._portal_cm.__exit__(None, None, None)
