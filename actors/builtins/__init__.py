"""Built-in agents, addressable by name in a daemon config (``type = "math"``)."""

from __future__ import annotations

from .._agent import Agent
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
}
