"""``callboard gateway``: the mesh seen from outside, as an MCP server and an A2A agent.

Needs the ``gateway`` extra (``pip install 'callboard[gateway]'``): the
official ``mcp`` and ``a2a-sdk`` SDKs speak the protocols; this package maps
them onto callboard's tasks, status events and cancel.
"""

from __future__ import annotations

from ._catalog import ExposedTool, ToolCatalog, tool_input_schema
from ._config import ExposedCapability, GatewayConfig, load_gateway_config
from ._gateway import Gateway, NotExposed

__all__ = [
    "ExposedCapability",
    "ExposedTool",
    "Gateway",
    "GatewayConfig",
    "NotExposed",
    "ToolCatalog",
    "load_gateway_config",
    "tool_input_schema",
]
