"""``type = "mcp"``: an external MCP server's tools as capabilities on the bus.

The agent starts the server (a stdio command) or connects to it (a streamable
HTTP URL) when it is built, lists its tools, and serves each (or the chosen
ones) as a capability of the same name, publishing the tool's input schema in
discovery, so LLM agents and the orchestrator see it like any capability. A
task's payload is the tool's arguments; it is validated against the tool's
schema first (a 400 names what is wrong), the tool's progress notifications
become ``progress`` events, and a tool error (``isError``) fails the task.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import jsonschema
from mcp import types

from bus import AgentMessage, BadInput, ConfigError, TaskError, validate_capability

from .._agent import Agent, Capability
from ._mcp_session import McpServerSession

__all__ = ["McpBridge", "SchemaCapability", "tool_result"]

log = logging.getLogger("callboard.bridges.mcp")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SchemaCapability(Capability):
    """A capability whose input is described by a JSON Schema (not a Python type).

    Attributes:
        schema: the input's JSON Schema, published as is in discovery.
    """

    schema: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def input_schema(self) -> dict[str, Any]:
        """The declared schema."""
        return dict(self.schema)


class McpBridge(Agent):
    """Serves the tools of one MCP server as capabilities.

    Args:
        agent_id: the agent id.
        command: the server's command line, for a stdio server.
        url: the server's streamable HTTP endpoint, instead.
        tools: serve only these tools (all of them when None).
        prefix: put before each tool's name to make its capability's name.
        rename: tool name → capability name, for names that are not one
            subject token (MCP allows ``.`` and ``/``; callboard does not).
        env: extra environment variables of the command.
        token_env: for a URL, send ``Authorization: Bearer $token_env``.
        open_timeout: seconds to start the server and list its tools.
        max_concurrency: tasks run at once.
        default_timeout: seconds a task may run when its sender set no deadline.

    Raises:
        ConfigError: the server cannot be reached, a chosen tool does not
            exist, or a tool's name is not a valid capability name.
    """

    kind = "mcp"

    def __init__(
        self,
        agent_id: str | None = None,
        *,
        command: Sequence[str] | None = None,
        url: str | None = None,
        tools: Sequence[str] | None = None,
        prefix: str = "",
        rename: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        token_env: str | None = None,
        open_timeout: float = 30.0,
        max_concurrency: int | None = None,
        default_timeout: float | None = None,
    ) -> None:
        headers = {}
        if token_env:
            token = os.environ.get(token_env)
            if not token:
                raise ConfigError(f"mcp bridge: {token_env} is not set (token_env)")
            headers["Authorization"] = f"Bearer {token}"
        self.server = McpServerSession(
            command=command, url=url, env=env, headers=headers, open_timeout=open_timeout
        )
        try:
            self._tools = self._choose(self.server.tools, tools, prefix, rename or {})
            capabilities = [
                SchemaCapability(
                    name=name,
                    description=tool.description or tool.title or f"MCP tool {tool.name}",
                    schema=tool.inputSchema,
                )
                for name, tool in self._tools.items()
            ]
            super().__init__(
                agent_id,
                capabilities=capabilities,
                max_concurrency=max_concurrency,
                default_timeout=default_timeout,
            )
        except BaseException:
            self.server.close()
            raise

    def _choose(
        self,
        listed: list[types.Tool],
        wanted: Sequence[str] | None,
        prefix: str,
        rename: Mapping[str, str],
    ) -> dict[str, types.Tool]:
        by_name = {tool.name: tool for tool in listed}
        missing = sorted(set(wanted or ()) - set(by_name))
        if missing:
            offered = ", ".join(sorted(by_name)) or "none"
            raise ConfigError(
                f"mcp bridge to {self.server.where}: no tool {', '.join(missing)} "
                f"(it offers {offered})"
            )
        chosen: dict[str, types.Tool] = {}
        for name in wanted if wanted is not None else sorted(by_name):
            capability = rename.get(name, f"{prefix}{name}")
            try:
                validate_capability(capability)
            except ConfigError as exc:
                raise ConfigError(
                    f"mcp bridge: tool {name!r} needs a capability name: {exc.message}; "
                    f'map it with rename = {{ "{name}" = "a-name" }}'
                ) from exc
            chosen[capability] = by_name[name]
        return chosen

    async def handle(self, task: AgentMessage) -> Any:
        """Call the tool of the task's capability with the payload as its arguments."""
        tool = self._tools[task.capability]
        arguments = task.payload if task.payload is not None else {}
        if not isinstance(arguments, dict):
            raise BadInput(f"the arguments of MCP tool {tool.name!r} must be a JSON object")
        try:
            jsonschema.validate(arguments, tool.inputSchema)
        except jsonschema.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "the arguments"
            raise BadInput(f"{where}: {exc.message}") from None
        except jsonschema.SchemaError:
            log.debug("tool %s has an invalid schema; not validating", tool.name)
        loop = asyncio.get_running_loop()
        reports: asyncio.Queue[tuple[float, float | None, str | None]] = asyncio.Queue()

        def on_progress(done: float, total: float | None, message: str | None) -> None:
            loop.call_soon_threadsafe(reports.put_nowait, (done, total, message))

        async def relay() -> None:
            while True:
                done, total, message = await reports.get()
                await self.context.progress(message or "", {"progress": done, "total": total})

        failure: Exception | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(relay)
            try:
                result = await self.server.call(tool.name, arguments, on_progress)
            except Exception as exc:  # raised after the group, not inside its exception group
                failure = exc
            tg.cancel_scope.cancel()
        if failure is not None:
            raise failure
        return tool_result(tool.name, result)

    async def aclose(self) -> None:
        """Stop the MCP session (and a stdio server)."""
        await anyio.to_thread.run_sync(self.server.close)


def tool_result(name: str, result: types.CallToolResult) -> Any:
    """A tool's result as a task result: its structured content, else its text.

    Raises:
        TaskError: the tool reported an error (``isError``): 500 ``tool_error``, its
            text as the message.
    """
    texts = [c.text for c in result.content if isinstance(c, types.TextContent)]
    if result.isError:
        message = "\n".join(texts) or "the tool failed without a message"
        raise TaskError(f"MCP tool {name!r} failed: {message}", code=500, type="tool_error")
    if result.structuredContent is not None:
        return result.structuredContent
    if len(texts) == len(result.content):
        return "\n".join(texts)
    return [c.model_dump(mode="json", exclude_none=True) for c in result.content]
