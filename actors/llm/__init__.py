"""The LLM-backed agent: a language model with tools, in an agent loop.

``LLMAgent`` serves a capability (``chat`` by default) with a model from
``actors.llm.models``; its tools are Python callables (``tool``, ``FunctionTool``) or
other agents' capabilities on the bus (``CapabilityTool``, ``delegate=``).
``AgentLoop`` is the loop itself, usable without the bus.
"""

from __future__ import annotations

from ._agent import DEFAULT_SYSTEM_PROMPT, LLMAgent, LLMInput, Prompt
from ._catalog import DEFAULT_CATALOG_TTL, CapabilityCatalog, capability_tools
from ._errors import (
    ToolArgumentsError,
    ToolError,
    ToolRoundsExceeded,
    ToolUnavailable,
    UnknownTool,
)
from ._loop import DEFAULT_MAX_TOOL_ROUNDS, AgentLoop
from ._output import InvalidOutput, OutputContract
from ._progress import DEFAULT_PROGRESS_INTERVAL, ProgressReport, TokenProgress
from ._tools import CapabilityTool, FunctionTool, Tool, as_tool, tool, tool_name

__all__ = [
    "DEFAULT_CATALOG_TTL",
    "DEFAULT_MAX_TOOL_ROUNDS",
    "DEFAULT_PROGRESS_INTERVAL",
    "DEFAULT_SYSTEM_PROMPT",
    "AgentLoop",
    "CapabilityCatalog",
    "CapabilityTool",
    "FunctionTool",
    "InvalidOutput",
    "LLMAgent",
    "LLMInput",
    "OutputContract",
    "ProgressReport",
    "Prompt",
    "TokenProgress",
    "Tool",
    "ToolArgumentsError",
    "ToolError",
    "ToolRoundsExceeded",
    "ToolUnavailable",
    "UnknownTool",
    "as_tool",
    "capability_tools",
    "tool",
    "tool_name",
]
