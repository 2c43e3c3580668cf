"""Bridges: the ecosystem's tools and agents as capabilities on the bus.

``type = "mcp"`` serves an MCP server's tools; ``type = "a2a"`` forwards a
capability to a remote A2A agent. Both need the ``gateway`` extra (the
official ``mcp`` and ``a2a-sdk`` SDKs), so they are imported only when a
config names them.
"""

from __future__ import annotations

import importlib

from bus import ConfigError

from .._agent import Agent

__all__ = ["BRIDGE_AGENTS", "bridge_agent_type"]

BRIDGE_AGENTS = {
    "mcp": "actors.bridges._mcp:McpBridge",
    "a2a": "actors.bridges._a2a:A2ABridge",
}
"""The bridge agent types of the daemon config, and where each class lives."""


def bridge_agent_type(name: str) -> type[Agent]:
    """The class of a bridge type, imported now.

    Raises:
        ConfigError: the gateway extra is not installed.
    """
    module_name, _, class_name = BRIDGE_AGENTS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"agent type {name!r} needs the gateway extra ({exc}): pip install 'callboard[gateway]'"
        ) from exc
    cls: type[Agent] = getattr(module, class_name)
    return cls
