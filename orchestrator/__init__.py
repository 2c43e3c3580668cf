"""The director side of callboard: dispatch, pipelines, discovery, and the CLI."""

from __future__ import annotations

from ._orchestrator import Orchestrator
from ._pipeline import PipelineError, Step, StepFailed, StepResult, resolve_references
from ._registry import AgentInfo, discover_agents

__all__ = [
    "AgentInfo",
    "Orchestrator",
    "PipelineError",
    "Step",
    "StepFailed",
    "StepResult",
    "discover_agents",
    "resolve_references",
]
