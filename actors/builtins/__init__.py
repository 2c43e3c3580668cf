"""Built-in agents, addressable by name in a daemon config (``type = "math"``).

``llm`` is the LLM-backed agent of ``actors.llm``; it needs a model table in
its options and the ``llm`` extra for the HTTP model clients.
"""

from __future__ import annotations

from .._agent import Agent
from ..llm import LLMAgent
from ._agents import (
    EchoAgent,
    MathAgent,
    MathInput,
    MathOutput,
    SummarizeAgent,
    SummarizeInput,
    SummarizeOutput,
)

__all__ = [
    "BUILTIN_AGENTS",
    "EchoAgent",
    "MathAgent",
    "MathInput",
    "MathOutput",
    "SummarizeAgent",
    "SummarizeInput",
    "SummarizeOutput",
]

BUILTIN_AGENTS: dict[str, type[Agent]] = {
    "math": MathAgent,
    "echo": EchoAgent,
    "summarize": SummarizeAgent,
    "llm": LLMAgent,
}
