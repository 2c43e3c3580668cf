"""Prometheus metrics of callboard's agents and dispatchers, each class creating
its collectors on the registry it is given (the connection's metrics are in
``_connection_metrics``, the fleet's, derived from the status stream, in
``_fleet_metrics``).

The names, labels and buckets are a contract with the Grafana dashboard and the
alert rules in ``deploy/``: change them only with those. Nothing here touches
prometheus_client's global registry; a daemon makes its own, tests pass a fresh
one. Hot paths bind their label children once (``AgentMetrics.bind`` when a
runner starts), so a task costs a few ``inc``/``observe`` calls and no lookup
by label.

Those calls are cheap too: the counters and histograms on the hot paths are
``LoopCounter`` and ``LoopHistogram``, from the one module that reaches into
prometheus_client (``_prometheus``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge

from .._errors import NoAgentError, TaskCancelled, TaskTimeout
from .._messages import AgentState, TaskState
from ._prometheus import LoopCounter, LoopHistogram
from ._refusal_metrics import RefusalMetrics

__all__ = [
    "DISPATCH_OUTCOMES",
    "DURATION_BUCKETS",
    "MODEL_CORRECTIONS",
    "AgentMetrics",
    "AgentSeries",
    "CapabilitySeries",
    "DispatchMetrics",
    "dispatch_outcome",
    "label_sets",
]

DURATION_BUCKETS = (
    *(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0),
)
"""Seconds: sub-millisecond built-in agents up to five-minute LLM tasks."""
DISPATCH_OUTCOMES = ("ok", "no_agent", "timeout", "agent_error", "cancelled")
"""How a dispatched (or delegated) task ended, the ``outcome`` label."""
_REJECT_REASONS = ("overloaded", "draining")
MODEL_CORRECTIONS = ("text_tool_calls", "repeated_calls", "output_repairs")
"""What an LLM agent corrects in its model's replies, the ``kind`` label: tool calls
written as text (run as calls), calls repeated after their results (answered with
a reminder), an answer off the declared output schema (asked again)."""
_STATES: tuple[str, ...] = tuple(s.value for s in (*AgentState, *TaskState))


def dispatch_outcome(error: BaseException | None) -> str:
    """The ``outcome`` label of a task that raised ``error`` (None: it succeeded).

    Errors outside the four named kinds (a lost connection, a payload the
    server refused) count as ``agent_error``: the task got no result.
    """
    if error is None:
        return "ok"
    if isinstance(error, NoAgentError):
        return "no_agent"
    if isinstance(error, TaskTimeout):
        return "timeout"
    if isinstance(error, TaskCancelled) or not isinstance(error, Exception):
        return "cancelled"
    return "agent_error"


class AgentMetrics:
    """The agent side: one set per agent host process.

    Args:
        registry: where the collectors are registered (one set per registry).

    Attributes:
        refusals: what the agents refuse from the bus (reflection attempts,
            cancels without the caller's token), by reason.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.refusals = RefusalMetrics(registry)

        def counter(name: str, doc: str, *labels: str) -> Counter:
            return LoopCounter(name, doc, labels, registry=registry)

        def gauge(name: str, doc: str, *labels: str) -> Gauge:
            return Gauge(name, doc, labels, registry=registry)

        self.up = gauge(
            "callboard_agent_up", "1 while the agent serves, 0 once it drains", "agent", "kind"
        )
        self.received = counter(
            "callboard_agent_tasks_received_total",
            "Tasks that reached the agent",
            *("agent", "capability"),
        )
        self.completed = counter(
            "callboard_agent_tasks_completed_total",
            "Tasks answered with a result",
            *("agent", "capability"),
        )
        self.failed = counter(
            "callboard_agent_tasks_failed_total",
            "Tasks answered with an error reply, by wire error code",
            *("agent", "capability", "code"),
        )
        self.rejected = counter(
            "callboard_agent_tasks_rejected_total",
            "Tasks refused before running (overloaded or draining)",
            *("agent", "capability", "reason"),
        )
        self.duration = LoopHistogram(
            "callboard_agent_task_duration_seconds",
            "Handler time of completed and failed tasks",
            ("agent", "capability"),
            registry=registry,
            buckets=DURATION_BUCKETS,
        )
        self.in_flight = gauge("callboard_agent_tasks_in_flight", "Tasks running now", "agent")
        self.max_concurrency = gauge(
            "callboard_agent_max_concurrency", "Tasks the agent runs at once", "agent"
        )
        self.status_events = counter(
            "callboard_agent_status_events_total", "Status events published", "agent", "state"
        )
        self.delegations = counter(
            "callboard_agent_delegations_total",
            "Sub-tasks delegated, by the capability delegated to and outcome",
            *("agent", "capability", "outcome"),
        )
        self.model_corrections = counter(
            "callboard_agent_model_corrections_total",
            "Model replies an LLM agent corrected, by kind (see MODEL_CORRECTIONS)",
            *("agent", "kind"),
        )

    def bind(
        self, agent_id: str, kind: str, capabilities: Sequence[str], max_concurrency: int
    ) -> AgentSeries:
        """The label children of one agent, created now so its hot path looks nothing up."""
        return AgentSeries(self, agent_id, kind, capabilities, max_concurrency)


class CapabilitySeries:
    """One (agent, capability)'s children: what a task touches on the hot path."""

    __slots__ = ("_failed", "_labels", "_metrics", "completed", "duration", "received", "rejected")

    def __init__(self, metrics: AgentMetrics, agent_id: str, capability: str) -> None:
        self._metrics = metrics
        self._labels = (agent_id, capability)
        self.received = metrics.received.labels(*self._labels)
        self.completed = metrics.completed.labels(*self._labels)
        self.duration = metrics.duration.labels(*self._labels)
        self.rejected = {r: metrics.rejected.labels(*self._labels, r) for r in _REJECT_REASONS}
        self._failed: dict[int, Counter] = {}

    def finished(self, seconds: float, error_code: int | None) -> None:
        """Count a task that ran: completed when ``error_code`` is None, else failed."""
        self.duration.observe(seconds)
        if error_code is None:
            self.completed.inc()
            return
        child = self._failed.get(error_code)
        if child is None:
            child = self._metrics.failed.labels(*self._labels, str(error_code))
            self._failed[error_code] = child
        child.inc()

    def remove(self) -> None:
        """Drop this capability's series from the registry."""
        m = self._metrics
        for metric in (m.received, m.completed, m.duration):
            metric.remove(*self._labels)
        for reason in _REJECT_REASONS:
            m.rejected.remove(*self._labels, reason)
        for code in self._failed:
            m.failed.remove(*self._labels, str(code))


class AgentSeries:
    """One agent's label children, bound once when its runner starts.

    Attributes:
        capabilities: the children of each capability the agent serves.
        status_events: the status event counter of each state.
    """

    def __init__(
        self,
        metrics: AgentMetrics,
        agent_id: str,
        kind: str,
        capabilities: Sequence[str],
        max_concurrency: int,
    ) -> None:
        self._metrics = metrics
        self.agent_id = agent_id
        self.kind = kind
        self.up = metrics.up.labels(agent_id, kind)
        self.in_flight = metrics.in_flight.labels(agent_id)
        metrics.max_concurrency.labels(agent_id).set(max_concurrency)
        self.capabilities = {c: CapabilitySeries(metrics, agent_id, c) for c in capabilities}
        self.status_events = {s: metrics.status_events.labels(agent_id, s) for s in _STATES}
        self._delegations: dict[tuple[str, str], Counter] = {}
        self._corrections: dict[str, Counter] = {}
        self._removed = False

    def read_in_flight(self, read: Callable[[], float]) -> None:
        """Take the in-flight gauge from ``read`` at scrape time (nothing to do per task)."""
        self.in_flight.set_function(read)

    def delegated(self, capability: str, outcome: str) -> None:
        """Count one sub-task sent to ``capability`` that ended with ``outcome``."""
        if self._removed:
            return
        child = self._delegations.get((capability, outcome))
        if child is None:
            child = self._metrics.delegations.labels(self.agent_id, capability, outcome)
            self._delegations[capability, outcome] = child
        child.inc()

    def model_corrected(self, kind: str, count: int = 1) -> None:
        """Count ``count`` model replies of ``kind`` (one of ``MODEL_CORRECTIONS``) that
        the agent corrected; only an agent whose model needed it has the series.

        Raises:
            ValueError: ``kind`` is not one of ``MODEL_CORRECTIONS``.
        """
        if kind not in MODEL_CORRECTIONS:
            raise ValueError(f"unknown model correction {kind!r}: one of {MODEL_CORRECTIONS}")
        if self._removed or count <= 0:
            return
        child = self._corrections.get(kind)
        if child is None:
            child = self._corrections[kind] = self._metrics.model_corrections.labels(
                self.agent_id, kind
            )
        child.inc(count)

    def remove(self) -> None:
        """Drop every series of this agent: it is no longer hosted, so it must not linger."""
        self._removed = True
        m, agent = self._metrics, self.agent_id
        m.up.remove(agent, self.kind)
        m.in_flight.remove(agent)
        m.max_concurrency.remove(agent)
        for series in self.capabilities.values():
            series.remove()
        for state in _STATES:
            m.status_events.remove(agent, state)
        for capability, outcome in self._delegations:
            m.delegations.remove(agent, capability, outcome)
        for kind in self._corrections:
            m.model_corrections.remove(agent, kind)


class DispatchMetrics:
    """The orchestrator side: dispatch, retries, pipelines and the live registry.

    Args:
        registry: where the collectors are registered.
        refusals: where its registry counts the status events it drops (forged,
            malformed); None counts them only in the registry's attributes.

    Attributes:
        refusals: as given.
    """

    def __init__(
        self, registry: CollectorRegistry, *, refusals: RefusalMetrics | None = None
    ) -> None:
        self.refusals = refusals
        self.dispatches = LoopCounter(
            "callboard_dispatch_total",
            "Tasks dispatched, by outcome",
            ("capability", "outcome"),
            registry=registry,
        )
        self.duration = LoopHistogram(
            "callboard_dispatch_duration_seconds",
            "Request to reply latency, every outcome",
            ("capability",),
            registry=registry,
            buckets=DURATION_BUCKETS,
        )
        self.retries = LoopCounter(
            "callboard_dispatch_retries_total",
            "Retry attempts made by the retry policy",
            ("capability",),
            registry=registry,
        )
        self.pipeline_runs = LoopCounter(
            "callboard_pipeline_runs_total", "Pipeline runs", ("outcome",), registry=registry
        )
        self.pipeline_steps = LoopCounter(
            "callboard_pipeline_steps_total", "Pipeline steps", ("outcome",), registry=registry
        )
        self.live_agents = Gauge(
            "callboard_registry_live_agents",
            "Live agents per capability in the orchestrator's registry",
            ("capability",),
            registry=registry,
        )

    def dispatched(self, capability: str, seconds: float, error: BaseException | None) -> str:
        """Count one dispatch and its latency; returns its outcome label."""
        outcome = dispatch_outcome(error)
        self.dispatches.labels(capability, outcome).inc()
        self.duration.labels(capability).observe(seconds)
        return outcome

    def set_live_agents(self, counts: Mapping[str, int]) -> None:
        """Live agents per capability; a capability seen before and gone now reads 0."""
        known = {labels[0] for labels in label_sets(self.live_agents)}
        for capability in known - counts.keys():
            self.live_agents.labels(capability).set(0)
        for capability, count in counts.items():
            self.live_agents.labels(capability).set(count)


def label_sets(metric: Gauge) -> list[tuple[str, ...]]:
    """The label values of every series ``metric`` has now."""
    return [tuple(s.labels.values()) for family in metric.collect() for s in family.samples]
