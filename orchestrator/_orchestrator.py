"""The ``Orchestrator``: dispatch tasks to capabilities and run pipelines.

It keeps the original pattern's names (``register``, ``find_agent``,
``dispatch``, ``run_pipeline``), but the agents live elsewhere: dispatch is
NATS request-reply to ``<prefix>.task.<capability>``, and "registered"
means "known to be live on the bus".
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Mapping, Sequence
from types import TracebackType
from typing import Any

from nats.aio.client import Client

from bus import (
    DEFAULT_PREFIX,
    DEFAULT_TIMEOUT,
    AgentMessage,
    DispatchMetrics,
    TaskClient,
    new_task_id,
)
from bus.durable import DurableSettings, TaskRecord

from ._decompose import Aggregator, Decomposer, JoinAggregator, RuleDecomposer
from ._durable import DurableDispatch
from ._fanout import run_steps
from ._live import DEFAULT_HEARTBEAT_TIMEOUT, LiveRegistry
from ._metrics import OrchestratorMetrics
from ._pipeline import DEFAULT_PIPELINE_CONCURRENCY, Step, StepResult, as_step
from ._registry import AgentInfo, discover_agents, first_with
from ._retry import NO_RETRY, RetryPolicy, send_with_retry
from ._router import KeywordRouter, Route, Router
from ._run import RunResult, run_request

__all__ = ["Orchestrator", "RunResult"]


class Orchestrator:
    """Sends tasks to the agents on the bus and combines their results.

    Args:
        nc: a connected nats-py client.
        prefix: the subject prefix of the system.
        name: who the tasks come from (``Agent-Sender``).
        default_timeout: seconds a task may take when a call does not say.
        heartbeat_timeout: seconds of silence after which the registry drops an agent.
        router: picks a capability for free text (``KeywordRouter``).
        decomposer: splits a request into steps (``RuleDecomposer``).
        aggregator: combines step results (``JoinAggregator``).
        retry: the default retry policy of every dispatch (``NO_RETRY``).
        metrics: where to count dispatches, retries, pipeline runs and the
            registry's live agents (see ``orchestrator._metrics``); None (the
            default) records nothing and costs nothing.
        durable_settings: how to create the JetStream streams and bucket if no
            daemon has yet (durable dispatch only; defaults otherwise).

    Attributes:
        metrics: the metrics as this orchestrator records them, or None.
        retries: retry attempts made so far.
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
        retry: RetryPolicy = NO_RETRY,
        metrics: DispatchMetrics | None = None,
        durable_settings: DurableSettings | None = None,
    ) -> None:
        self.nc = nc
        self.client = TaskClient(nc, prefix=prefix, sender=name, default_timeout=default_timeout)
        self.subjects = self.client.subjects
        self.registry = LiveRegistry(nc, self.subjects, heartbeat_timeout=heartbeat_timeout)
        self.outstanding: dict[str, int] = {}
        self.router: Router = router or KeywordRouter(self.outstanding)
        self.decomposer: Decomposer = decomposer or RuleDecomposer()
        self.aggregator: Aggregator = aggregator or JoinAggregator()
        self.retry = retry
        self.retries = 0
        self.metrics = None if metrics is None else OrchestratorMetrics(metrics, self.registry)
        self.durable = DurableDispatch(
            nc,
            prefix=prefix,
            sender=name,
            settings=durable_settings,
            default_timeout=default_timeout,
        )
        self.durable.client.cancel_keys = self.client.cancel_keys  # security: one caller

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
        agents = await self.registry.confirmed()  # security: proven capabilities only
        if not agents:
            await self.discover()
            agents = await self.registry.confirmed()
        return self.router.route(text, agents)

    async def run(self, request: str, *, timeout: float | None = None) -> RunResult:
        """Decompose a request into steps, dispatch each in turn, aggregate.

        The decomposer sees the live agents. A text step is routed (keyword
        overlap, ties round-robin, the less loaded agent first) and turned into
        its payload (see ``payload_from_text``); a ``Step`` goes to its
        capability as it is, its references (``$prev``, ``$steps.<n>``) filled
        from earlier results. Every step is checked before the first is
        dispatched, and steps run in order, so a later step may rely on an
        earlier one having happened. See ``orchestrator._run``.

        Args:
            request: what to do, in plain words.
            timeout: seconds each step may take (unless a ``Step`` sets its own).

        Raises:
            NoRouteError: a step has no live capability; nothing is dispatched.
                ``PlanError`` (a subclass) when a model's plan stayed invalid.
            PipelineError: a ``Step`` refers to a step that does not run before
                it; nothing is dispatched.
            StepFailed: a step failed, or a reference named a field its result
                lacks; it names the step and holds the earlier results.
            ModelError: a model-backed decomposer or aggregator failed
                (``AggregationError`` carries the step results).
        """
        return await run_request(self, request, timeout=timeout)

    async def request(
        self,
        capability: str,
        payload: Any,
        *,
        timeout: float | None = None,
        task_id: str | None = None,
        seq: int | None = None,
        agent_id: str | None = None,
        retry: RetryPolicy | None = None,
        durable: bool = False,
    ) -> AgentMessage:
        """Like ``dispatch``, but return the whole reply (result, agent id, task ID).

        With metrics, the call counts once, with the outcome of its last attempt
        and the time since its first (retry waits included); retries count apart.
        """
        sending = self._call(capability, payload, timeout, task_id, seq, agent_id, retry, durable)
        if self.metrics is None:
            return await sending
        return await self._counted(capability, sending)

    async def result(self, task_id: str, *, timeout: float | None = 0) -> Any:
        """The result of a durable task, by ID, waiting up to ``timeout`` seconds
        (0: answer now; None: no limit). Any process may ask, at any later time.

        Raises:
            UnknownTask: no durable task has this ID (or its record expired).
            TaskStillPending: not done yet; it goes on.
            AgentError: it failed, or was dead-lettered after its attempts.
            TaskCancelled: it was cancelled.
        """
        return await self.durable.client.result(task_id, timeout=timeout)

    async def task_record(self, task_id: str) -> TaskRecord:
        """A durable task's record now: state, attempts, agent, times, result or error."""
        return await self.durable.client.record(task_id)

    def _call(
        self,
        capability: str,
        payload: Any,
        timeout: float | None,
        task_id: str | None,
        seq: int | None,
        agent_id: str | None,
        retry: RetryPolicy | None,
        durable: bool,
    ) -> Awaitable[AgentMessage]:
        """The awaitable of one ``request`` (not counted): made here, awaited by
        the caller, so that a plain core dispatch runs as few coroutines as it can."""
        policy = retry or self.retry
        task_id = task_id or new_task_id()
        if policy.attempts == 1 and not durable:
            # the core path with no retry: one send, no closure chain
            return self.client.request(
                capability, payload, timeout=timeout, task_id=task_id, seq=seq, agent_id=agent_id
            )

        def send() -> Awaitable[AgentMessage]:
            if durable:
                return self.durable.request(
                    capability,
                    payload,
                    timeout=timeout,
                    task_id=task_id,
                    seq=seq,
                    agent_id=agent_id,
                )
            return self.client.request(
                capability, payload, timeout=timeout, task_id=task_id, seq=seq, agent_id=agent_id
            )

        if self.metrics is None:
            return send_with_retry(send, policy, task_id=task_id, on_retry=self._retried)
        children = self.metrics.capability(capability)

        def retried() -> None:
            self._retried()
            children.retries.inc()

        return send_with_retry(send, policy, task_id=task_id, on_retry=retried)

    async def _counted(self, capability: str, sending: Awaitable[AgentMessage]) -> AgentMessage:
        """Await a call (its attempts and retry waits included) and count its outcome."""
        assert self.metrics is not None
        children = self.metrics.capability(capability)
        started = time.perf_counter()
        try:
            reply = await sending
        except BaseException as exc:  # cancellation included: it is an outcome too
            children.dispatched(time.perf_counter() - started, exc)
            raise
        children.dispatched(time.perf_counter() - started, None)
        return reply

    def _retried(self) -> None:
        self.retries += 1

    async def dispatch(
        self,
        capability: str,
        payload: Any,
        *,
        timeout: float | None = None,
        task_id: str | None = None,
        seq: int | None = None,
        agent_id: str | None = None,
        retry: RetryPolicy | None = None,
        durable: bool = False,
    ) -> Any:
        """Send one task to a capability and return its result.

        Args:
            capability: the capability to send it to.
            payload: any JSON value (or msgspec Struct).
            timeout: seconds to wait; the orchestrator's default when None.
            task_id: the task ID; a new one when None (pass the same one to retry).
            seq: the task's position in a pipeline.
            agent_id: send to this agent instance instead of any replica.
            retry: how to retry failures (the orchestrator's policy when None);
                every attempt keeps the task ID.
            durable: store the task in JetStream and wait for its record instead
                of request-reply: it waits for an agent if none is up, survives
                agent, caller and server restarts, is retried and dead-lettered
                by the agents, and its result can be fetched later with
                ``result(task_id)``. ``timeout`` bounds only this wait.

        Raises:
            NoAgentError: no agent serves the capability (at once, no waiting;
                core dispatch only: a durable task waits for one).
            TaskTimeout: no reply in time (durable: ``TaskStillPending``, and
                the task goes on).
            AgentError: the agent replied with an error; ``code`` says which.
        """
        sending = self._call(capability, payload, timeout, task_id, seq, agent_id, retry, durable)
        metrics = self.metrics
        if metrics is None:
            return (await sending).payload
        # ``_counted``, written out: one coroutine fewer on the hot path
        children = metrics.capability(capability)
        started = time.perf_counter()
        try:
            reply = await sending
        except BaseException as exc:  # cancellation included: it is an outcome too
            children.dispatched(time.perf_counter() - started, exc)
            raise
        children.dispatched(time.perf_counter() - started, None)
        return reply.payload

    async def run_pipeline(
        self,
        steps: Sequence[Step | Mapping[str, Any]],
        *,
        timeout: float | None = None,
        max_concurrency: int = DEFAULT_PIPELINE_CONCURRENCY,
        partial: bool = False,
        durable: bool = False,
    ) -> list[StepResult]:
        """Run steps as their dependencies allow; a step may use others' results.

        A step depends on the steps in its ``after`` list and on those its
        payload refers to (``$prev``, ``$steps.<id>``); it is dispatched once
        they have succeeded. Up to ``max_concurrency`` steps are in flight, the
        ready step given first going first, so the default of 1 runs the steps
        one after another in the order given. See ``orchestrator._pipeline``.

        Args:
            steps: ``Step`` values or mappings (``{"capability": ..., "payload": ...}``).
            timeout: seconds each step may take unless it sets its own.
            max_concurrency: steps in flight at once; raise it to fan out.
            partial: run every step that can run despite failures, instead of
                stopping at the first; failed steps carry ``error``, and the
                steps that depend on them a 424 ``dependency_failed`` error.
            durable: dispatch every step as a durable task (see ``dispatch``).

        Returns:
            One ``StepResult`` per step, in step order (``seq`` is 1-based).
            With metrics, a run that starts counts once, ok, partial or failed,
            and each of its steps ok, failed or skipped (see ``_fanout``).

        Raises:
            PipelineError: the pipeline is malformed (unknown id in ``after`` or a
                reference, duplicate id, cycle); raised before anything is sent.
            StepFailed: a step failed (not with ``partial``); it names the step,
                holds the results that succeeded, and the steps still in flight
                were cancelled.
        """
        parsed = [as_step(step) for step in steps]
        return await run_steps(
            functools.partial(self.request, durable=True) if durable else self.request,
            parsed,
            timeout=timeout,
            max_concurrency=max_concurrency,
            partial=partial,
            report=None if self.metrics is None else self.metrics.pipeline_finished,
        )
