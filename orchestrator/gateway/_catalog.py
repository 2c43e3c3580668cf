"""The tools the gateway offers: the exposed capabilities that are live now.

A capability becomes a tool (MCP) or a skill (A2A) while at least one live
agent serves it and the config exposes it. Its description and input schema
come from the agents' discovery metadata (``$SRV.INFO``), unless the config
sets a description. MCP wants every tool's input to be a JSON object: a
capability whose input is not one (a string, or any JSON value) takes its
payload from the tool's one argument ``input``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import msgspec
from nats.aio.client import Client

from bus import Subjects
from bus.micro import CapabilityInfo, discover_capabilities

from .._live import LiveRegistry
from ._config import GatewayConfig

__all__ = ["WRAPPED_ARGUMENT", "ExposedTool", "ToolCatalog", "tool_input_schema"]

log = logging.getLogger("callboard.gateway")

WRAPPED_ARGUMENT = "input"
"""The one argument of a tool whose capability does not take a JSON object."""
_DISCOVERY_WAIT = 0.3
"""Seconds the catalog listens for ``$SRV.INFO`` replies when the live set changes."""


class ExposedTool(msgspec.Struct, frozen=True, kw_only=True):
    """One capability as a tool.

    Attributes:
        name: the capability name (the tool's and the skill's name).
        description: what it does.
        input_schema: the tool's input schema (always a JSON object schema).
        wrapped: the payload is the ``input`` argument, not the arguments object.
        keywords: words a request may use for it (A2A skill tags).
    """

    name: str
    description: str
    input_schema: dict[str, Any]
    wrapped: bool = False
    keywords: tuple[str, ...] = ()

    def payload(self, arguments: dict[str, Any]) -> Any:
        """The task payload of a call with these arguments."""
        return arguments.get(WRAPPED_ARGUMENT) if self.wrapped else arguments


def tool_input_schema(schema: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """A capability's input schema as a tool's: (object schema, wrapped).

    msgspec writes a Struct as ``{"$ref": "#/$defs/Name", "$defs": {...}}``; the
    referenced object is inlined so clients that do not follow a top-level
    ``$ref`` still see its properties.
    """
    defs = schema.get("$defs") if isinstance(schema.get("$defs"), dict) else None
    ref = schema.get("$ref")
    resolved = schema
    if isinstance(ref, str) and ref.startswith("#/$defs/") and defs is not None:
        target = defs.get(ref.removeprefix("#/$defs/"))
        if isinstance(target, dict):
            resolved = {**target, "$defs": defs}
    if resolved.get("type") == "object":
        return dict(resolved), False
    inner = {k: v for k, v in schema.items() if k != "$defs"}
    wrapper: dict[str, Any] = {
        "type": "object",
        "properties": {WRAPPED_ARGUMENT: inner},
        "required": [WRAPPED_ARGUMENT],
    }
    if defs is not None:
        wrapper["$defs"] = defs
    return wrapper, True


class ToolCatalog:
    """Keeps the exposed, live capabilities as tools, and says when they change.

    Args:
        nc: the connection.
        subjects: the system's subjects.
        registry: the live registry (which agents are up, and what they serve).
        config: the gateway config (what is exposed, description overrides).

    Attributes:
        tools: the tools now, by name.
    """

    def __init__(
        self, nc: Client, subjects: Subjects, registry: LiveRegistry, config: GatewayConfig
    ) -> None:
        self.nc = nc
        self.subjects = subjects
        self.registry = registry
        self.config = config
        self.tools: dict[str, ExposedTool] = {}
        self._live: frozenset[str] = frozenset()

    def live_exposed(self) -> frozenset[str]:
        """The exposed capabilities some live agent serves now."""
        live = self.registry.capabilities()
        return frozenset(name for name in self.config.capabilities if name in live)

    async def refresh(self) -> bool:
        """Rebuild the tools from discovery if the live set changed; True if the tools did."""
        live = self.live_exposed()
        if live == self._live and live == set(self.tools):
            return False
        self._live = live
        found: dict[str, CapabilityInfo] = {}
        if live:
            agents = {a.id for a in self.registry.live()}
            for info in await discover_capabilities(self.nc, self.subjects, wait=_DISCOVERY_WAIT):
                if info.name in live and info.agent_id in agents:
                    found.setdefault(info.name, info)
        tools = {name: self._tool(name, found.get(name)) for name in sorted(live)}
        changed = tools != self.tools
        self.tools = tools
        return changed

    def _tool(self, name: str, info: CapabilityInfo | None) -> ExposedTool:
        entry = self.config.capabilities[name]
        declared = info.description if info is not None else ""
        schema, wrapped = tool_input_schema(info.input_schema if info is not None else {})
        return ExposedTool(
            name=name,
            description=entry.description or declared or f"the callboard capability {name}",
            input_schema=schema,
            wrapped=wrapped,
            keywords=info.keywords if info is not None else (),
        )

    def _live_set_changed(self, _agents: object) -> bool:
        return self.live_exposed() != self._live

    async def follow(self, on_change: Callable[[], Awaitable[None]]) -> None:
        """Refresh whenever the live set changes (or an agent expires), calling ``on_change``
        after each change of the tools; runs until cancelled."""
        period = max(self.registry.heartbeat_timeout / 3, 0.5)
        while True:
            with anyio.move_on_after(period):
                await self.registry.wait_for(self._live_set_changed, timeout=math.inf)
            try:
                changed = await self.refresh()
            except Exception as exc:  # a discovery failure must not end the gateway
                log.warning("could not refresh the gateway's tools: %s", exc)
                continue
            if changed:
                log.info("gateway tools now: %s", ", ".join(self.tools) or "none")
                await on_change()
