"""The fleet's metrics, computed from the status stream by ``callboard monitor
--metrics``: what every agent on the bus is doing, seen from outside.

They are derived from events anyone can read, so they need no access to the
agents' own processes (and their names say ``fleet`` so they never collide with
the ``agent`` series those processes export themselves).

Time is not kept here: whoever feeds the events decides when a silent agent has
expired (``expire``: up 0, out of the live counts) and when a gone agent's
series are deleted (``forget``), so that agents with random ids come and go
without the series piling up. ``callboard monitor`` does both (see
``orchestrator.cli.monitor``).
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from .._messages import Cancelled, Completed, Failed, Heartbeat, Offline, Online, StatusEvent
from ._metrics import DURATION_BUCKETS, label_sets

__all__ = ["FleetMetrics"]


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
        self.status_events = Counter(
            "callboard_fleet_status_events_total",
            "Status events seen",
            ("state",),
            registry=registry,
        )
        self._capabilities: dict[str, tuple[str, ...]] = {}

    def observe(self, event: StatusEvent) -> None:
        """Update the fleet's metrics from one status event."""
        self.status_events.labels(str(event.__struct_config__.tag)).inc()
        agent = event.agent
        if isinstance(event, Online | Heartbeat):
            in_flight = event.in_flight if isinstance(event, Heartbeat) else 0
            self.live(agent, event.capabilities, event.max_concurrency, in_flight)
        elif isinstance(event, Offline):
            self.expire(agent)
        elif isinstance(event, Completed | Failed | Cancelled):
            outcome = str(event.__struct_config__.tag)
            self.tasks.labels(agent, event.capability, outcome).inc()
            if isinstance(event, Failed) and event.error is not None:
                self.tasks_failed.labels(agent, event.capability, str(event.error.code)).inc()
            if not isinstance(event, Cancelled):
                self.task_duration.labels(event.capability).observe(event.elapsed_ms / 1000)

    def live(
        self, agent_id: str, capabilities: Sequence[str], max_concurrency: int, in_flight: int = 0
    ) -> None:
        """The agent is live: it said online or beat, or discovery found it (no event counted)."""
        self.agent_up.labels(agent_id).set(1)
        self.agent_max_concurrency.labels(agent_id).set(max_concurrency)
        self.agent_in_flight.labels(agent_id).set(in_flight)
        capabilities = tuple(capabilities)
        if self._capabilities.get(agent_id) != capabilities:
            self._capabilities[agent_id] = capabilities
            self._count_live()

    def expire(self, agent_id: str) -> None:
        """The agent said offline or missed its heartbeats: it is no longer live."""
        self.agent_up.labels(agent_id).set(0)
        self.agent_in_flight.labels(agent_id).set(0)
        if self._capabilities.pop(agent_id, None) is not None:
            self._count_live()

    def forget(self, agent_id: str) -> None:
        """Delete every series of the agent: it has been gone long enough to stop showing.

        The per-capability series (live agents, durations) stay: capabilities are few.
        """
        if self._capabilities.pop(agent_id, None) is not None:
            self._count_live()
        for gauge in (self.agent_up, self.agent_in_flight, self.agent_max_concurrency):
            gauge.remove(agent_id)
        for counter in (self.tasks, self.tasks_failed):
            for labels in _label_sets_of(counter, agent_id):
                counter.remove(*labels)

    def _count_live(self) -> None:
        counts: dict[str, int] = {}
        for capabilities in self._capabilities.values():
            for capability in capabilities:
                counts[capability] = counts.get(capability, 0) + 1
        known = {labels[0] for labels in label_sets(self.live_agents)}
        for capability in known | counts.keys():
            self.live_agents.labels(capability).set(counts.get(capability, 0))


def _label_sets_of(metric: MetricWrapperBase, agent_id: str) -> set[tuple[str, ...]]:
    """The label values of ``metric``'s series whose first label (``agent``) is ``agent_id``."""
    return {
        labels
        for family in metric.collect()
        for sample in family.samples
        if (labels := tuple(sample.labels.values()))[:1] == (agent_id,)
    }
