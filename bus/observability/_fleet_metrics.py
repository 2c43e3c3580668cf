"""The fleet's metrics, computed from the status stream by ``callboard monitor
--metrics``: what every agent on the bus is doing, seen from outside.

They are derived from events anyone can read, so they need no access to the
agents' own processes (and their names say ``fleet`` so they never collide with
the ``agent`` series those processes export themselves).

Time is not kept here: whoever feeds the events decides when a silent agent has
expired (``expire``: up 0, out of the live counts) and when a gone agent's
series are deleted (``forget``), so that agents with random ids come and go
without the series piling up. ``callboard monitor`` does both (see
``orchestrator.cli.monitor``), and also forgets capabilities unheard of for as
long (``forget_capability``), and counts what its caps left out (``left_out``).

The work per event and per forget is bounded by that agent's (or capability's)
own series: the series of each agent and capability are indexed here, never
found by reading a whole metric back.

Rejections (a 503 ``overloaded`` or ``draining`` refusal: the task never ran)
are counted apart, in ``callboard_fleet_tasks_rejected_total``, and left out of
``callboard_fleet_task_duration_seconds``, as the daemon does: their 0 ms would
make the fleet look faster the more it refuses.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from .._messages import Cancelled, Completed, Failed, Heartbeat, Offline, Online, StatusEvent
from ._metrics import DURATION_BUCKETS

__all__ = ["REJECTION_TYPES", "FleetMetrics", "rejection_reason"]

REJECTION_TYPES = ("overloaded", "draining")
"""The error types of a 503 that refused a task before it ran."""


def rejection_reason(event: StatusEvent) -> str | None:
    """``overloaded`` or ``draining`` if ``event`` is a refusal (a task that never ran)."""
    if isinstance(event, Failed) and event.error is not None and event.error.code == 503:
        if event.error.type in REJECTION_TYPES:
            return event.error.type
    return None


class FleetMetrics:
    """The whole fleet, as ``callboard monitor --metrics`` sees it on the status stream.

    Args:
        registry: where the collectors are registered.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        def gauge(name: str, doc: str, label: str) -> Gauge:
            return Gauge(name, doc, (label,), registry=registry)

        self.agent_up = gauge("callboard_fleet_agent_up", "1 while the agent is live", "agent")
        self.agent_in_flight = gauge(
            "callboard_fleet_agent_in_flight", "Tasks in flight at the last heartbeat", "agent"
        )
        self.agent_max_concurrency = gauge(
            "callboard_fleet_agent_max_concurrency", "The agent's concurrency limit", "agent"
        )
        self.live_agents = gauge(
            "callboard_fleet_live_agents", "Live agents per capability", "capability"
        )
        self.tasks = Counter(
            "callboard_fleet_tasks_total",
            "Tasks that ended, by outcome (completed, failed, cancelled)",
            ("agent", "capability", "outcome"),
            registry=registry,
        )
        self.tasks_failed = Counter(
            "callboard_fleet_tasks_failed_total",
            "Failed tasks by error code",
            ("agent", "capability", "code"),
            registry=registry,
        )
        self.task_duration = Histogram(
            "callboard_fleet_task_duration_seconds",
            "Handler time reported by completed and failed events",
            ("capability",),
            registry=registry,
            buckets=DURATION_BUCKETS,
        )
        self.tasks_rejected = Counter(
            "callboard_fleet_tasks_rejected_total",
            "Tasks refused before running (overloaded, draining); also failed, never timed",
            ("agent", "capability", "reason"),
            registry=registry,
        )
        self.status_events = Counter(
            "callboard_fleet_status_events_total",
            "Status events seen",
            ("state",),
            registry=registry,
        )
        self.left_out = Counter(
            "callboard_fleet_left_out_total",
            "Events or capabilities not tracked: the monitor's cap on agents or capabilities",
            ("what",),
            registry=registry,
        )
        # live agent -> its capabilities; capability -> live agents that have it
        self._capabilities: dict[str, tuple[str, ...]] = {}
        self._live_counts: dict[str, int] = {}
        # the (agent, capability) series made, indexed both ways for forgetting
        self._series: dict[tuple[str, str], set[tuple[MetricWrapperBase, tuple[str, ...]]]] = {}
        self._by_agent: dict[str, set[str]] = {}
        self._by_capability: dict[str, set[str]] = {}

    def observe(self, event: StatusEvent, capabilities: Sequence[str] | None = None) -> None:
        """Update the fleet's metrics from one status event.

        Args:
            event: the event.
            capabilities: of an online or heartbeat event, the ones to count (those
                the monitor tracks); all the event's own when None.
        """
        self.status_events.labels(str(event.__struct_config__.tag)).inc()
        agent = event.agent
        if isinstance(event, Online | Heartbeat):
            in_flight = event.in_flight if isinstance(event, Heartbeat) else 0
            names = event.capabilities if capabilities is None else capabilities
            self.live(agent, names, event.max_concurrency, in_flight)
        elif isinstance(event, Offline):
            self.expire(agent)
        elif isinstance(event, Completed | Failed | Cancelled):
            capability = event.capability
            outcome = str(event.__struct_config__.tag)
            self._child(self.tasks, agent, capability, outcome).inc()
            if isinstance(event, Failed) and event.error is not None:
                self._child(self.tasks_failed, agent, capability, str(event.error.code)).inc()
            reason = rejection_reason(event)
            if reason is not None:
                self._child(self.tasks_rejected, agent, capability, reason).inc()
            elif not isinstance(event, Cancelled):
                self.task_duration.labels(capability).observe(event.elapsed_ms / 1000)

    def _child(self, metric: Counter, agent: str, capability: str, label: str) -> Counter:
        """The series of ``metric`` for (agent, capability, label), indexed for forgetting."""
        key = (agent, capability)
        made = self._series.get(key)
        if made is None:
            made = self._series[key] = set()
            self._by_agent.setdefault(agent, set()).add(capability)
            self._by_capability.setdefault(capability, set()).add(agent)
        made.add((metric, (agent, capability, label)))
        child: Counter = metric.labels(agent, capability, label)
        return child

    def live(
        self, agent_id: str, capabilities: Sequence[str], max_concurrency: int, in_flight: int = 0
    ) -> None:
        """The agent is live: it said online or beat, or discovery found it (no event counted)."""
        self.agent_up.labels(agent_id).set(1)
        self.agent_max_concurrency.labels(agent_id).set(max_concurrency)
        self.agent_in_flight.labels(agent_id).set(in_flight)
        capabilities = tuple(capabilities)
        before = self._capabilities.get(agent_id)
        if before != capabilities:
            self._capabilities[agent_id] = capabilities
            self._count_live(before or (), capabilities)

    def expire(self, agent_id: str) -> None:
        """The agent said offline or missed its heartbeats: it is no longer live."""
        self.agent_up.labels(agent_id).set(0)
        self.agent_in_flight.labels(agent_id).set(0)
        before = self._capabilities.pop(agent_id, None)
        if before is not None:
            self._count_live(before, ())

    def forget(self, agent_id: str) -> None:
        """Delete every series of the agent: it has been gone long enough to stop showing.

        The per-capability series (live agents, durations) stay until the
        capability is forgotten (``forget_capability``).
        """
        before = self._capabilities.pop(agent_id, None)
        if before is not None:
            self._count_live(before, ())
        for gauge in (self.agent_up, self.agent_in_flight, self.agent_max_concurrency):
            gauge.remove(agent_id)
        for capability in self._by_agent.pop(agent_id, set()):
            self._remove_series(agent_id, capability)
            agents = self._by_capability.get(capability)
            if agents is not None:
                agents.discard(agent_id)
                if not agents:
                    del self._by_capability[capability]

    def forget_capability(self, capability: str) -> None:
        """Delete every series of a capability nobody has named for a long time."""
        self.live_agents.remove(capability)
        self.task_duration.remove(capability)
        self._live_counts.pop(capability, None)
        for agent_id in self._by_capability.pop(capability, set()):
            self._remove_series(agent_id, capability)
            capabilities = self._by_agent.get(agent_id)
            if capabilities is not None:
                capabilities.discard(capability)
                if not capabilities:
                    del self._by_agent[agent_id]

    def _remove_series(self, agent_id: str, capability: str) -> None:
        for metric, labels in self._series.pop((agent_id, capability), set()):
            metric.remove(*labels)

    def _count_live(self, before: Sequence[str], after: Sequence[str]) -> None:
        """Move one agent's weight from the capabilities ``before`` to those ``after``."""
        counts = self._live_counts
        for capability in set(before) ^ set(after):
            counts[capability] = counts.get(capability, 0) + (1 if capability in after else -1)
            self.live_agents.labels(capability).set(counts[capability])
