"""The ``Orchestrator``: dispatch tasks to capabilities and run pipelines.

It keeps the original pattern's names (``register``, ``find_agent``,
``dispatch``, ``run_pipeline``), but the agents live elsewhere: dispatch is
NATS request-reply to ``<prefix>.task.<capability>``, and "registered"
means "known to be live on the bus".
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import msgspec
from nats.aio.client import Client

from bus import (
    DEFAULT_PREFIX,
    DEFAULT_TIMEOUT,
    AgentMessage,
    CallboardError,
    TaskClient,
    new_task_id,
)

from ._decompose import (
    Aggregator,
    Decomposer,
    JoinAggregator,
    RuleDecomposer,
    payload_from_text,
)
from ._live import DEFAULT_HEARTBEAT_TIMEOUT, LiveRegistry
from ._pipeline import Step, StepFailed, StepResult, as_step, resolve_references
from ._registry import AgentInfo, discover_agents, first_with
from ._router import KeywordRouter, NoRouteError, Route, Router

__all__ = ["Orchestrator", "RunResult"]


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


class Orchestrator:
    """Sends tasks to the agents on the bus and combines their results.

    Args:
        nc: a connected nats-py client.
        prefix: the subject prefix of the system.
        name: who the tasks come from (``Agent-Sender``).
        default_timeout: seconds a task may take when a call does not say.
    """

    def __init__(
        self,
        nc: Client,
        *,
        prefix: str = DEFAULT_PREFIX,
        name: str = "orchestrator",
        default_timeout: float = DEFAULT_TIMEOUT,
        heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT,
        router: Router | None = None,
        decomposer: Decomposer | None = None,
        aggregator: Aggregator | None = None,
    ) -> None:
        self.nc = nc
        self.client = TaskClient(nc, prefix=prefix, sender=name, default_timeout=default_timeout)
        self.subjects = self.client.subjects
        self.registry = LiveRegistry(nc, self.subjects, heartbeat_timeout=heartbeat_timeout)
        self.outstanding: dict[str, int] = {}
        self.router: Router = router or KeywordRouter(self.outstanding)
        self.decomposer: Decomposer = decomposer or RuleDecomposer()
        self.aggregator: Aggregator = aggregator or JoinAggregator()

    async def __aenter__(self) -> Orchestrator:
        """Start following the live agents (lifecycle events + one discovery)."""
        await self.registry.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.registry.stop()

    @property
    def agents(self) -> list[AgentInfo]:
        """The agents known to be live, by id."""
        return self.registry.live()

    def register(self, agent: AgentInfo) -> None:
        """Record an agent as live (discovery and heartbeats do this on their own)."""
        self.registry.add(agent)

    def unregister(self, agent_id: str) -> None:
        """Forget an agent."""
        self.registry.remove(agent_id)

    async def discover(self, *, wait: float = 0.5) -> list[AgentInfo]:
        """Ask the bus which agents are live (``$SRV.INFO``) and register them."""
        found = await discover_agents(self.nc, self.subjects, wait=wait)
        for agent in found:
            self.register(agent)
        return found

    async def find_agent(self, capability: str, *, refresh: bool = True) -> AgentInfo | None:
        """The first live agent that serves ``capability``, or None.

        Args:
            capability: the capability wanted.
            refresh: ask the bus when no registered agent has it.
        """
        agent = first_with(self.agents, capability)
        if agent is None and refresh:
            await self.discover()
            agent = first_with(self.agents, capability)
        return agent

    async def route(self, text: str) -> Route:
        """The capability and agent the router picks for ``text``.

        Raises:
            NoRouteError: no live capability matches.
        """
        agents = self.agents
        if not agents:
            await self.discover()
            agents = self.agents
        return self.router.route(text, agents)

    async def run(self, request: str, *, timeout: float | None = None) -> RunResult:
        """Decompose a request into steps, route and dispatch each in turn, aggregate.

        Each step's text is routed to a capability (keyword overlap, ties
        round-robin, the less loaded agent first) and turned into its payload
        (see ``payload_from_text``); steps run in order, so a later step could
        rely on an earlier one having happened.

        Raises:
            NoRouteError: a step matches no live capability (nothing is dispatched).
            StepFailed: a step failed; it names the step.
        """
        texts = await self.decomposer.decompose(request)
        if not texts:
            raise NoRouteError("the request is empty: say what should be done")
        routes = [await self.route(text) for text in texts]
        results: list[StepResult] = []
        for seq, (text, route) in enumerate(zip(texts, routes, strict=True), 1):
            schema = self._input_schema(route)
            payload = payload_from_text(text, route.matched, schema)
            step = Step(capability=route.capability, payload=payload)
            task_id = new_task_id()
            started = time.perf_counter()
            agent_key = route.agent_id or ""
            self.outstanding[agent_key] = self.outstanding.get(agent_key, 0) + 1
            try:
                reply = await self.request(
                    route.capability,
                    payload,
                    timeout=timeout,
                    task_id=task_id,
                    seq=seq,
                    agent_id=route.agent_id,
                )
            except CallboardError as exc:
                raise StepFailed(seq, step, exc, results) from exc
            finally:
                self.outstanding[agent_key] -= 1
            results.append(
                StepResult(
                    seq=seq,
                    capability=route.capability,
                    task_id=task_id,
                    agent=reply.sender,
                    result=reply.payload,
                    elapsed_ms=round((time.perf_counter() - started) * 1000, 3),
                )
            )
        answer = await self.aggregator.aggregate(request, results)
        return RunResult(request=request, answer=answer, steps=results)

    def _input_schema(self, route: Route) -> str:
        for agent in self.agents:
            if route.capability in agent.input_schemas:
                return agent.input_schemas[route.capability]
        return "{}"

    async def request(
        self,
        capability: str,
        payload: Any,
        *,
        timeout: float | None = None,
        task_id: str | None = None,
        seq: int | None = None,
        agent_id: str | None = None,
    ) -> AgentMessage:
        """Like ``dispatch``, but return the whole reply (result, agent id, task ID)."""
        return await self.client.request(
            capability, payload, timeout=timeout, task_id=task_id, seq=seq, agent_id=agent_id
        )

    async def dispatch(
        self,
        capability: str,
        payload: Any,
        *,
        timeout: float | None = None,
        task_id: str | None = None,
        seq: int | None = None,
        agent_id: str | None = None,
    ) -> Any:
        """Send one task to a capability and return its result.

        Args:
            capability: the capability to send it to.
            payload: any JSON value (or msgspec Struct).
            timeout: seconds to wait; the orchestrator's default when None.
            task_id: the task ID; a new one when None (pass the same one to retry).
            seq: the task's position in a pipeline.
            agent_id: send to this agent instance instead of any replica.

        Raises:
            NoAgentError: no agent serves the capability (at once, no waiting).
            TaskTimeout: no reply in time.
            AgentError: the agent replied with an error; ``code`` says which.
        """
        reply = await self.request(
            capability, payload, timeout=timeout, task_id=task_id, seq=seq, agent_id=agent_id
        )
        return reply.payload

    async def run_pipeline(
        self, steps: Sequence[Step | Mapping[str, Any]], *, timeout: float | None = None
    ) -> list[StepResult]:
        """Run steps one after another; a step may use earlier results (see ``Step``).

        Returns:
            One ``StepResult`` per step, in step order.

        Raises:
            StepFailed: a step failed; it names the step and holds the earlier results.
            PipelineError: a step or a reference in it is malformed.
        """
        parsed = [as_step(step) for step in steps]
        results: list[StepResult] = []
        by_key: dict[str, Any] = {}
        prev: str | None = None
        for seq, step in enumerate(parsed, 1):
            payload = resolve_references(step.payload, by_key, prev=prev)
            task_id = new_task_id()
            started = time.perf_counter()
            try:
                reply = await self.request(
                    step.capability,
                    payload,
                    timeout=step.timeout if step.timeout is not None else timeout,
                    task_id=task_id,
                    seq=seq,
                )
            except CallboardError as exc:
                raise StepFailed(seq, step, exc, results) from exc
            results.append(
                StepResult(
                    seq=seq,
                    capability=step.capability,
                    step_id=step.id,
                    task_id=task_id,
                    agent=reply.sender,
                    result=reply.payload,
                    elapsed_ms=round((time.perf_counter() - started) * 1000, 3),
                )
            )
            prev = str(seq)
            by_key[prev] = reply.payload
            if step.id:
                by_key[step.id] = reply.payload
        return results
