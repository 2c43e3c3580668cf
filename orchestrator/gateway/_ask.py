"""``ask`` over the gateway: a request in plain words, run on the exposed capabilities only.

The orchestrator's decompose-route-aggregate (``run_request``, as
``Orchestrator.run``) runs on a view of the mesh that holds only what the
gateway's config exposes: the decomposer and the router see only those
capabilities, and a step bound to any other is refused before anything is
sent. Each step's start and end are told to the caller.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from bus import AgentMessage

from .._decompose import Aggregator, Decomposer
from .._live import LiveRegistry
from .._metrics import OrchestratorMetrics
from .._registry import AgentInfo
from .._router import NoRouteError, Route
from .._run import RunResult, run_request
from ._gateway import Gateway, NotExposed

__all__ = ["ASK_SKILL", "ExposedRunner", "StepSink", "ask"]

ASK_SKILL = "ask"
"""The skill that runs a request in plain words instead of one capability."""

StepSink = Callable[[int, str, str, dict[str, Any]], Awaitable[None]]
"""Told ``(seq, capability, state, detail)`` as each step is sent and answered."""


class ExposedRunner:
    """The ``Runner`` of ``run_request``: the gateway's orchestrator, seen through
    the config's exposed capabilities.

    Args:
        gateway: the gateway (its orchestrator and config).
        on_step: told when each step is dispatched and when it is answered.
    """

    def __init__(self, gateway: Gateway, on_step: StepSink) -> None:
        self.gateway = gateway
        self.on_step = on_step
        self.exposed = frozenset(gateway.config.capabilities)
        self.outstanding: dict[str, int] = {}

    @property
    def agents(self) -> list[AgentInfo]:
        return self._exposed_only(self.gateway.orchestrator.agents)

    @property
    def registry(self) -> LiveRegistry:
        return self.gateway.orchestrator.registry

    @property
    def decomposer(self) -> Decomposer:
        return self.gateway.orchestrator.decomposer

    @property
    def aggregator(self) -> Aggregator:
        return self.gateway.orchestrator.aggregator

    @property
    def metrics(self) -> OrchestratorMetrics | None:
        return None

    async def discover(self, *, wait: float = 0.5) -> list[AgentInfo]:
        return self._exposed_only(await self.gateway.orchestrator.discover(wait=wait))

    async def find_agent(self, capability: str, *, refresh: bool = True) -> AgentInfo | None:
        if capability not in self.exposed:
            return None
        return await self.gateway.orchestrator.find_agent(capability, refresh=refresh)

    async def route(self, text: str) -> Route:
        """The router's pick among the exposed capabilities of proven agents."""
        orchestrator = self.gateway.orchestrator
        agents = self._exposed_only(await orchestrator.registry.confirmed())
        if not agents:
            raise NoRouteError(
                f"no live agent serves an exposed capability ({', '.join(sorted(self.exposed))})"
            )
        return orchestrator.router.route(text, agents)

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
        """One step: an exposed capability, with the config's deadline and durability."""
        if capability not in self.exposed:  # security: never past the config
            raise NotExposed(f"unknown tool {capability!r}: this gateway does not offer it")
        config = self.gateway.config
        durable = config.is_durable(capability)
        step = seq or 0
        await self.on_step(step, capability, "dispatched", {"task_id": task_id})
        reply = await self.gateway.orchestrator.request(
            capability,
            payload,
            timeout=config.timeout_for(capability, timeout),
            task_id=task_id,
            seq=seq,
            agent_id=None if durable else agent_id,  # a durable task goes to the queue
            durable=durable,
        )
        await self.on_step(step, capability, "completed", {"agent": reply.sender})
        return reply

    def _exposed_only(self, agents: list[AgentInfo]) -> list[AgentInfo]:
        """The agents, each with only its exposed capabilities (none: left out)."""
        seen: list[AgentInfo] = []
        for agent in agents:
            kept = tuple(c for c in agent.capabilities if c in self.exposed)
            if not kept:
                continue
            seen.append(
                msgspec.structs.replace(
                    agent,
                    capabilities=kept,
                    keywords={c: k for c, k in agent.keywords.items() if c in kept},
                    input_schemas={c: s for c, s in agent.input_schemas.items() if c in kept},
                )
            )
        return seen


async def ask(
    gateway: Gateway, request: str, *, timeout: float | None, on_step: StepSink
) -> RunResult:
    """Run ``request`` over the exposed capabilities (see the module docstring).

    Raises:
        NoRouteError: a step matches no exposed capability.
        StepFailed: a step failed.
        PipelineError: the plan is malformed.
    """
    return await run_request(ExposedRunner(gateway, on_step), request, timeout=timeout)
