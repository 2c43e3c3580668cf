"""The director side of callboard: dispatch, pipelines, discovery, and the CLI."""

from __future__ import annotations

from ._decompose import Aggregator, Decomposer, JoinAggregator, RuleDecomposer, payload_from_text
from ._live import LiveRegistry
from ._metrics import OrchestratorMetrics
from ._orchestrator import Orchestrator, RunResult
from ._pipeline import (
    PipelineError,
    PipelineFile,
    Step,
    StepFailed,
    StepResult,
    load_pipeline,
    resolve_references,
)
from ._planner import AggregationError, LLMAggregator, LLMDecomposer, PlanError
from ._registry import AgentInfo, discover_agents
from ._retry import NO_RETRY, RetryPolicy
from ._router import KeywordRouter, NoRouteError, Route, Router

__all__ = [
    "NO_RETRY",
    "AgentInfo",
    "AggregationError",
    "Aggregator",
    "Decomposer",
    "JoinAggregator",
    "KeywordRouter",
    "LLMAggregator",
    "LLMDecomposer",
    "LiveRegistry",
    "NoRouteError",
    "Orchestrator",
    "OrchestratorMetrics",
    "PipelineError",
    "PipelineFile",
    "PlanError",
    "RetryPolicy",
    "Route",
    "Router",
    "RuleDecomposer",
    "RunResult",
    "Step",
    "StepFailed",
    "StepResult",
    "discover_agents",
    "load_pipeline",
    "payload_from_text",
    "resolve_references",
]
