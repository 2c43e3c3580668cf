"""The fleet as ``callboard monitor`` sees it on the status stream: each agent's
state, load and recent tasks, and when a gone agent stops being shown.

Pure and clock-free (every call takes ``now``, monotonic seconds), so the
lifetimes below are testable with explicit timestamps. The monitor feeds it every
event, sweeps it about once a second, and passes what the sweep expired and
forgot on to ``FleetMetrics``, so the table and ``/metrics`` agree.

Lifetimes. An agent is ``online`` from its online event, a heartbeat, discovery
or (for one the monitor met mid-life) any event of its own; ``draining`` once it
refuses tasks because it shuts down (a failed event of type ``draining``: the
wire has no drain event); ``offline`` after its offline event; ``expired`` when it
has been silent for longer than the heartbeat timeout. A gone (offline or
expired) agent is forgotten ``forget_after`` seconds later: its row and its
series disappear, so agents with random ids never pile up. A heartbeat or an
online event brings a gone agent back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from bus import (
    Accepted,
    Cancelled,
    Completed,
    Failed,
    Heartbeat,
    Offline,
    Online,
    Started,
    StatusEvent,
)

from ..._live import DEFAULT_HEARTBEAT_TIMEOUT
from ._fleet_window import DEFAULT_WINDOW, TaskWindow

__all__ = [
    "AGENT_STATES",
    "DEFAULT_FORGET_AFTER",
    "AgentRow",
    "FleetTotals",
    "FleetView",
    "Sweep",
    "fleet_totals",
]

DEFAULT_FORGET_AFTER = 600.0
"""Seconds a gone agent stays (as a row, and as series with ``callboard_fleet_agent_up``
0): longer than the 2 minutes the ``CallboardAgentDown`` alert waits, short enough
that restarts with new ids do not accumulate."""
AGENT_STATES = ("online", "draining", "offline", "expired")
_GONE = ("offline", "expired")


class AgentRow(NamedTuple):
    """One agent as the table shows it."""

    agent: str
    capabilities: tuple[str, ...]
    state: str
    in_flight: int
    max_concurrency: int
    tasks_per_second: float
    error_rate: float | None
    p50_ms: float | None
    p99_ms: float | None


class FleetTotals(NamedTuple):
    """The table's header: the sums over every row."""

    agents: int
    states: dict[str, int]
    in_flight: int
    capacity: int
    tasks_per_second: float
    error_rate: float | None


class Sweep(NamedTuple):
    """What one sweep changed: agents newly expired, agents forgotten."""

    expired: list[str]
    forgotten: list[str]


@dataclass
class _Agent:
    id: str
    heard: float
    window: TaskWindow
    capabilities: tuple[str, ...] = ()
    max_concurrency: int = 0
    state: str = "online"
    gone_since: float | None = None
    running: set[str] = field(default_factory=set)  # task ids accepted, not ended
    unseen_running: int = 0  # in flight at the last heartbeat, begun before we saw it

    @property
    def in_flight(self) -> int:
        return len(self.running) + self.unseen_running

    def go(self, state: str, now: float) -> None:
        self.state = state
        self.gone_since = now
        self.running.clear()
        self.unseen_running = 0

    def live(self, capabilities: Sequence[str], max_concurrency: int) -> None:
        self.capabilities = tuple(capabilities) or self.capabilities
        self.max_concurrency = max_concurrency or self.max_concurrency
        if self.state in _GONE:
            self.state = "online"
        self.gone_since = None


class FleetView:
    """Every agent heard of on one status stream, with its recent task statistics.

    Args:
        heartbeat_timeout: seconds of silence after which a live agent is expired.
        forget_after: seconds a gone agent is kept before it is forgotten.
        window: seconds behind the rates and percentiles.
    """

    def __init__(
        self,
        *,
        heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT,
        forget_after: float = DEFAULT_FORGET_AFTER,
        window: float = DEFAULT_WINDOW,
    ) -> None:
        self.heartbeat_timeout = heartbeat_timeout
        self.forget_after = forget_after
        self.window = window
        self._agents: dict[str, _Agent] = {}

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._agents

    def _agent(self, agent_id: str, now: float) -> _Agent:
        agent = self._agents.get(agent_id)
        if agent is None:
            agent = _Agent(agent_id, now, TaskWindow(now, window=self.window))
            self._agents[agent_id] = agent
        return agent

    def discovered(
        self, agent_id: str, capabilities: Sequence[str], max_concurrency: int, now: float
    ) -> bool:
        """An agent found by discovery; False (and nothing done) if already heard of,
        since its own events are newer than what discovery says."""
        if agent_id in self._agents:
            return False
        self._agent(agent_id, now).live(capabilities, max_concurrency)
        return True

    def observe(self, event: StatusEvent, now: float) -> None:
        """Update the fleet from one event received at ``now``."""
        agent = self._agent(event.agent, now)
        agent.heard = now
        if isinstance(event, Online):
            agent.live(event.capabilities, event.max_concurrency)
            agent.state = "online"  # a restart under the same id: it serves again
            agent.running.clear()
            agent.unseen_running = 0
        elif isinstance(event, Heartbeat):
            agent.live(event.capabilities, event.max_concurrency)
            if event.in_flight == 0:
                agent.running.clear()
            agent.unseen_running = max(0, event.in_flight - len(agent.running))
        elif isinstance(event, Offline):
            agent.go("offline", now)
        elif isinstance(event, Accepted | Started):
            if agent.state not in _GONE:
                agent.running.add(event.task_id)
        elif isinstance(event, Completed | Failed | Cancelled):
            self._ended(agent, event, now)
        if isinstance(event, Accepted | Started | Completed | Failed | Cancelled):
            capability = event.capability
            if capability and capability not in agent.capabilities:
                agent.capabilities = (*agent.capabilities, capability)

    def _ended(self, agent: _Agent, event: Completed | Failed | Cancelled, now: float) -> None:
        if event.task_id in agent.running:
            agent.running.discard(event.task_id)
        elif agent.unseen_running:
            agent.unseen_running -= 1
        failed = isinstance(event, Failed)
        elapsed = None if isinstance(event, Cancelled) else event.elapsed_ms
        agent.window.add(now, elapsed_ms=elapsed, failed=failed)
        error = event.error if isinstance(event, Failed) else None
        if error is not None and error.type == "draining" and agent.state == "online":
            agent.state = "draining"

    def sweep(self, now: float) -> Sweep:
        """Expire the silent, forget the long gone; returns their ids."""
        expired: list[str] = []
        forgotten: list[str] = []
        for agent in list(self._agents.values()):
            if agent.gone_since is None and now - agent.heard > self.heartbeat_timeout:
                agent.go("expired", now)
                expired.append(agent.id)
            elif agent.gone_since is not None and now - agent.gone_since >= self.forget_after:
                del self._agents[agent.id]
                forgotten.append(agent.id)
            else:
                agent.window.prune(now)
        return Sweep(expired, forgotten)

    def live_count(self) -> int:
        """Agents neither offline nor expired."""
        return sum(1 for agent in self._agents.values() if agent.gone_since is None)

    def rows(self, now: float) -> list[AgentRow]:
        """One row per agent, by id."""
        rows = []
        for agent_id in sorted(self._agents):
            agent = self._agents[agent_id]
            window = agent.window
            p50, p99 = window.latency_ms(now, 0.5, 0.99)
            rows.append(
                AgentRow(
                    agent=agent.id,
                    capabilities=agent.capabilities,
                    state=agent.state,
                    in_flight=agent.in_flight,
                    max_concurrency=agent.max_concurrency,
                    tasks_per_second=window.rate(now),
                    error_rate=window.error_rate(now),
                    p50_ms=p50,
                    p99_ms=p99,
                )
            )
        return rows


def fleet_totals(rows: Sequence[AgentRow]) -> FleetTotals:
    """The sums of the rows; the error rate weighs each agent by its task rate."""
    states = dict.fromkeys(AGENT_STATES, 0)
    for row in rows:
        states[row.state] = states.get(row.state, 0) + 1
    rate = sum(row.tasks_per_second for row in rows)
    failing = sum(row.tasks_per_second * (row.error_rate or 0.0) for row in rows)
    live = [row for row in rows if row.state not in _GONE]
    return FleetTotals(
        agents=len(rows),
        states=states,
        in_flight=sum(row.in_flight for row in rows),
        capacity=sum(row.max_concurrency for row in live),
        tasks_per_second=rate,
        error_rate=failing / rate if rate else None,
    )
