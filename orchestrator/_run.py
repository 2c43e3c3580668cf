"""``Orchestrator.run``: a request in plain words, from steps to one answer.

The decomposer (rule-based, or a model) turns the request into steps, given
the live agents. A text step is routed and turned into a payload; a ``Step``
goes to its capability as it is, its references (``$prev``, ``$steps.<n>``)
filled from earlier results. Every step is checked (a live capability, and
references that point backwards) before the first is dispatched, so a bad
plan costs no agent any work. Steps then run one after another, and the
aggregator combines their results.

With metrics, a run counts as a pipeline run once its plan is checked: ok, or
failed (a step failed, the aggregator failed, or it was cancelled).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import msgspec

from bus import AgentMessage, CallboardError, NoAgentError, new_task_id

from ._decompose import Aggregator, Decomposer, payload_from_text, reference_problems
from ._live import LiveRegistry
from ._metrics import OrchestratorMetrics
from ._pipeline import PipelineError, Step, StepFailed, StepResult, step_label
from ._references import resolve_references
from ._registry import AgentInfo
from ._router import NoRouteError, Route

__all__ = ["RunResult", "Runner", "run_request"]


class Runner(Protocol):
    """What a run needs of the director (``Orchestrator`` is one).

    A protocol rather than the class, so this module and ``_orchestrator``
    (which calls ``run_request``) do not import each other.
    """

    outstanding: dict[str, int]
    """Tasks in flight per agent id ("" for the queue group), read by the router."""

    @property
    def agents(self) -> list[AgentInfo]: ...
    @property
    def registry(self) -> LiveRegistry: ...
    @property
    def decomposer(self) -> Decomposer: ...
    @property
    def aggregator(self) -> Aggregator: ...
    @property
    def metrics(self) -> OrchestratorMetrics | None: ...

    async def discover(self, *, wait: float = ...) -> list[AgentInfo]: ...
    async def find_agent(self, capability: str, *, refresh: bool = ...) -> AgentInfo | None: ...
    async def route(self, text: str) -> Route: ...
    async def request(
        self,
        capability: str,
        payload: Any,
        *,
        timeout: float | None = ...,
        task_id: str | None = ...,
        seq: int | None = ...,
        agent_id: str | None = ...,
    ) -> AgentMessage: ...


class RunResult(msgspec.Struct, kw_only=True):
    """The outcome of ``Orchestrator.run``.

    Attributes:
        request: the request as given.
        answer: the aggregated answer.
        steps: every step's result, in step order.
    """

    request: str
    answer: Any
    steps: list[StepResult]


class _Planned(msgspec.Struct, frozen=True):
    step: Step
    agent_id: str | None  # None lets the queue group pick a replica
    literal: bool  # a payload made from text is sent as it is, never resolved


async def run_request(orch: Runner, request: str, *, timeout: float | None) -> RunResult:
    """Decompose, check, dispatch in order, aggregate (see ``Orchestrator.run``)."""
    if not orch.agents:
        await orch.discover()
    items = list(await orch.decomposer.decompose(request, orch.agents))
    if not items:
        raise NoRouteError("the request is empty: say what should be done")
    problems = reference_problems(items)
    if problems:
        raise PipelineError("; ".join(problems))
    planned = [await _plan(orch, seq, item) for seq, item in enumerate(items, 1)]
    outcomes = ["skipped"] * len(planned)
    try:
        results = await _run_steps(orch, planned, timeout, outcomes)
        answer = await orch.aggregator.aggregate(request, results)
    except BaseException:
        if orch.metrics is not None:
            orch.metrics.pipeline_finished("failed", outcomes)
        raise
    if orch.metrics is not None:
        orch.metrics.pipeline_finished("ok", outcomes)
    return RunResult(request=request, answer=answer, steps=results)


async def _run_steps(
    orch: Runner, planned: list[_Planned], timeout: float | None, outcomes: list[str]
) -> list[StepResult]:
    """Dispatch the planned steps in order; ``outcomes`` says how far they got."""
    results: list[StepResult] = []
    values: dict[str, Any] = {}
    for seq, plan in enumerate(planned, 1):
        step, payload = plan.step, plan.step.payload
        try:
            if not plan.literal:
                try:
                    prev = str(seq - 1) if seq > 1 else None
                    payload = resolve_references(payload, values, prev=prev)
                except PipelineError as exc:
                    cause = PipelineError(
                        f"{step_label(seq, step)}: {exc}", code=400, type="bad_reference"
                    )
                    raise StepFailed(seq, step, cause, results) from exc
            result = await _dispatch(orch, seq, plan, payload, timeout, results)
        except StepFailed:
            outcomes[seq - 1] = "failed"
            raise
        outcomes[seq - 1] = "ok"
        results.append(result)
        values[str(seq)] = result.result
        if step.id:
            values[step.id] = result.result
    return results


async def _plan(orch: Runner, seq: int, item: str | Step) -> _Planned:
    """Bind one decomposer item to a live capability, before anything is dispatched."""
    if isinstance(item, Step):
        if await orch.find_agent(item.capability) is None:
            known = ", ".join(sorted({c for a in orch.agents for c in a.capabilities}))
            raise NoRouteError(
                f"{step_label(seq, item)}: no live agent serves {item.capability!r}; "
                f"live capabilities: {known or 'none'}"
            )
        return _Planned(item, None, literal=False)
    route = await orch.route(item)
    confirmed = await orch.registry.confirmed()  # security: schemas of proven capabilities
    schemas = (a.input_schemas for a in confirmed if route.capability in a.input_schemas)
    schema = next(schemas, {}).get(route.capability, "{}")
    payload = payload_from_text(item, route.matched, schema)
    step = Step(capability=route.capability, payload=payload)
    return _Planned(step, route.agent_id, literal=True)


async def _dispatch(
    orch: Runner,
    seq: int,
    plan: _Planned,
    payload: Any,
    timeout: float | None,
    results: list[StepResult],
) -> StepResult:
    """Send one step; a failure is ``StepFailed`` holding the earlier results."""
    step = plan.step
    task_id = new_task_id()
    started = time.perf_counter()
    agent_key = plan.agent_id or ""
    orch.outstanding[agent_key] = orch.outstanding.get(agent_key, 0) + 1
    try:
        step_timeout = step.timeout if step.timeout is not None else timeout
        # security: if the chosen agent is gone or never was (a forged heartbeat),
        # any replica of the capability will do
        targets = (plan.agent_id, None) if plan.agent_id is not None else (None,)
        for target in targets:
            try:
                reply = await orch.request(
                    step.capability,
                    payload,
                    timeout=step_timeout,
                    task_id=task_id,
                    seq=seq,
                    agent_id=target,
                )
                break
            except NoAgentError:
                if target is None:
                    raise
    except CallboardError as exc:
        raise StepFailed(seq, step, exc, results) from exc
    finally:
        orch.outstanding[agent_key] -= 1
    return StepResult(
        seq=seq,
        capability=step.capability,
        step_id=step.id,
        task_id=task_id,
        agent=reply.sender,
        result=reply.payload,
        elapsed_ms=round((time.perf_counter() - started) * 1000, 3),
    )
