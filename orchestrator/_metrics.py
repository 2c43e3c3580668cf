"""An orchestrator's ``DispatchMetrics``: children bound per capability, pipeline
outcomes, and the live agents of its registry read at scrape time.

A dispatch counts once, as its caller sees it: the outcome of its last attempt,
and the time from the first attempt to that outcome (the retry policy's waits
included); each retry also counts in ``callboard_dispatch_retries_total``.

The live-agents gauge is read when Prometheus scrapes, from a snapshot the
registry's change callback replaces whole on the event loop, so the scraping
thread never touches the registry itself, and an agent that stops sending
heartbeats drops out of the count on time even if nothing calls the registry.
A capability seen once stays in the gauge (at 0 when nobody serves it) for the
life of the process: capabilities are few, and "0 agents" is what alerts need.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial

from prometheus_client import Counter, Histogram

from bus import DISPATCH_OUTCOMES, DispatchMetrics, dispatch_outcome

from ._live import LiveRegistry
from ._registry import AgentInfo

__all__ = ["PIPELINE_OUTCOMES", "STEP_OUTCOMES", "CapabilityChildren", "OrchestratorMetrics"]

PIPELINE_OUTCOMES = ("ok", "failed", "partial")
"""How a pipeline run ended: every step ok, raised, or (``partial=True``) some failed."""
STEP_OUTCOMES = ("ok", "failed", "skipped")
"""How one step of a run ended; ``skipped`` steps never gave a result of their own
(a failed dependency, or abandoned when another step failed)."""


class CapabilityChildren:
    """The label children one capability's dispatches touch, bound once."""

    __slots__ = ("duration", "ok", "outcomes", "retries")

    def __init__(self, metrics: DispatchMetrics, capability: str) -> None:
        self.outcomes: dict[str, Counter] = {
            outcome: metrics.dispatches.labels(capability, outcome) for outcome in DISPATCH_OUTCOMES
        }
        self.ok: Counter = self.outcomes[dispatch_outcome(None)]
        self.duration: Histogram = metrics.duration.labels(capability)
        self.retries: Counter = metrics.retries.labels(capability)

    def dispatched(self, seconds: float, error: BaseException | None) -> None:
        """Count one dispatch that ended with ``error`` (None: a result) after ``seconds``."""
        (self.ok if error is None else self.outcomes[dispatch_outcome(error)]).inc()
        self.duration.observe(seconds)


class OrchestratorMetrics:
    """``DispatchMetrics`` as one orchestrator records them.

    Args:
        metrics: the collectors (one registry's ``DispatchMetrics``).
        registry: the orchestrator's live registry, whose changes it follows.

    Attributes:
        dispatch: the ``DispatchMetrics`` given.
    """

    def __init__(self, metrics: DispatchMetrics, registry: LiveRegistry) -> None:
        self.dispatch = metrics
        self._registry = registry
        self._capabilities: dict[str, CapabilityChildren] = {}
        self._runs = {o: metrics.pipeline_runs.labels(o) for o in PIPELINE_OUTCOMES}
        self._steps = {o: metrics.pipeline_steps.labels(o) for o in STEP_OUTCOMES}
        # agent id -> (capabilities, monotonic time last heard); replaced whole, never
        # mutated, because the scraping thread reads it
        self._heard: Mapping[str, tuple[tuple[str, ...], float]] = {}
        self._live_capabilities: set[str] = set()
        registry.on_change = self.registry_changed
        if metrics.refusals is not None:
            registry.count_refusals(metrics.refusals)

    def capability(self, capability: str) -> CapabilityChildren:
        """The children of ``capability``, bound on its first dispatch."""
        children = self._capabilities.get(capability)
        if children is None:
            children = CapabilityChildren(self.dispatch, capability)
            self._capabilities[capability] = children
        return children

    def pipeline_finished(self, outcome: str, steps: Iterable[str]) -> None:
        """Count one run (``PIPELINE_OUTCOMES``) and each of its steps (``STEP_OUTCOMES``)."""
        self._runs[outcome].inc()
        for step in steps:
            self._steps[step].inc()

    def registry_changed(self, agent_id: str, agent: AgentInfo | None, heard: float) -> None:
        """Follow one change of the registry (``LiveRegistry.on_change``)."""
        heard_map = dict(self._heard)
        if agent is None:
            heard_map.pop(agent_id, None)
        else:
            heard_map[agent_id] = (agent.capabilities, heard)
            for capability in agent.capabilities:
                if capability not in self._live_capabilities:
                    self._live_capabilities.add(capability)
                    read = partial(self._count_live, capability)
                    self.dispatch.live_agents.labels(capability).set_function(read)
        self._heard = heard_map

    def _count_live(self, capability: str) -> float:
        """Agents of ``capability`` heard from within the heartbeat timeout (scrape thread)."""
        cutoff = self._registry.clock() - self._registry.heartbeat_timeout
        heard = self._heard
        return float(sum(1 for caps, at in heard.values() if at >= cutoff and capability in caps))
