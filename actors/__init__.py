"""The agent side of callboard: the ``Agent`` base class, the host that runs
agents on the bus, the built-in agents, the LLM agent and the daemon.
"""

from __future__ import annotations

from ._agent import DEFAULT_MAX_CONCURRENCY, DEFAULT_TASK_TIMEOUT, Agent, Capability
from ._config import AgentSpec, DaemonConfig, build_agents, load_config
from ._context import TaskContext, current_context
from ._daemon import READY_LINE, run_daemon
from ._host import DEFAULT_GRACE_PERIOD, DEFAULT_HEARTBEAT_INTERVAL, AgentHost, serve
from ._runner import DEFAULT_MAX_DELEGATION_DEPTH, DEFAULT_MAX_PAYLOAD, AgentRunner
from .builtins import BUILTIN_AGENTS, EchoAgent, MathAgent, SummarizeAgent
from .llm import (
    AgentLoop,
    CapabilityTool,
    FunctionTool,
    LLMAgent,
    Prompt,
    Tool,
    ToolError,
    ToolRoundsExceeded,
    tool,
)

__all__ = [
    "BUILTIN_AGENTS",
    "DEFAULT_GRACE_PERIOD",
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_MAX_DELEGATION_DEPTH",
    "DEFAULT_MAX_PAYLOAD",
    "DEFAULT_TASK_TIMEOUT",
    "READY_LINE",
    "Agent",
    "AgentHost",
    "AgentLoop",
    "AgentRunner",
    "AgentSpec",
    "Capability",
    "CapabilityTool",
    "DaemonConfig",
    "EchoAgent",
    "FunctionTool",
    "LLMAgent",
    "MathAgent",
    "Prompt",
    "SummarizeAgent",
    "TaskContext",
    "Tool",
    "ToolError",
    "ToolRoundsExceeded",
    "build_agents",
    "current_context",
    "load_config",
    "run_daemon",
    "serve",
    "tool",
]
