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

Bounds. Anyone who may publish status events can invent agent ids and
capability names, so the work per event is bounded (no pass over the fleet),
the live and the gone agents are kept in the order they will expire and be
forgotten (a sweep stops at the first that is not due: forgetting is linear),
and at most ``max_agents`` agents and ``max_capabilities`` capabilities are
tracked. At the agent cap, the longest-gone agent is forgotten early to make
room, or, with none gone, the newcomer's event is left out; at the capability
cap, events of a new capability are left out. ``Tracked`` says what was left
out, for the monitor to count. A capability that no tracked agent shows, and
that nobody has named for ``forget_after`` seconds, is forgotten too
(``forget_capabilities``), and its series with it: one whose agents have all
gone stays (``callboard_fleet_live_agents`` 0, for the alert that says nobody
serves it) until ``forget_after`` after the last of them is forgotten.
"""

from __future__ import annotations

from collections import OrderedDict
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
    TaskEvent,
    rejection_reason,
)

from ..._live import DEFAULT_HEARTBEAT_TIMEOUT
from ._fleet_window import DEFAULT_WINDOW, TaskWindow

__all__ = [
    "AGENT_STATES",
    "DEFAULT_FORGET_AFTER",
    "DEFAULT_MAX_AGENTS",
    "DEFAULT_MAX_CAPABILITIES",
    "MAX_CAPABILITIES_PER_AGENT",
    "AgentRow",
    "FleetTotals",
    "FleetView",
    "Sweep",
    "Tracked",
    "fleet_totals",
]

DEFAULT_FORGET_AFTER = 600.0
"""Seconds a gone agent stays (as a row, and as series with ``callboard_fleet_agent_up``
0): longer than the 2 minutes the ``CallboardAgentDown`` alert waits, short enough
that restarts with new ids do not accumulate."""
DEFAULT_MAX_AGENTS = 10_000
"""Agents tracked at most (rows, and series of each): far above a real fleet, far
below what makes a sweep or a scrape slow."""
DEFAULT_MAX_CAPABILITIES = 256
"""Capabilities tracked at most (each has series of its own, and per agent)."""
MAX_CAPABILITIES_PER_AGENT = 64
"""Capabilities one agent is shown with at most; more in its events are left out."""
MAX_RUNNING_PER_AGENT = 10_000
"""Task ids kept per agent to count its tasks in flight: accepted events that never
end (invented, or lost) cannot grow it further; its next heartbeat corrects it."""
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


@dataclass(frozen=True)
class Tracked:
    """What ``FleetView.observe`` took of one event; true when it took the event.

    Attributes:
        event: False when the whole event was left out (a new agent or a new
            capability beyond its cap): nothing should count it.
        capabilities: the event's capabilities that are tracked (for online
            and heartbeat events, the agent's; for task events, the task's).
        forgotten: agents forgotten early to make room for this event's agent.
        left_out: what was left out, one word per item: ``agent``, ``capability``.
    """

    event: bool
    capabilities: tuple[str, ...] = ()
    forgotten: tuple[str, ...] = ()
    left_out: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.event


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
        forget_after: seconds a gone agent (or an unheard-of capability) is kept
            before it is forgotten.
        window: seconds behind the rates and percentiles.
        max_agents: agents tracked at most.
        max_capabilities: capabilities tracked at most.
    """

    def __init__(
        self,
        *,
        heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT,
        forget_after: float = DEFAULT_FORGET_AFTER,
        window: float = DEFAULT_WINDOW,
        max_agents: int = DEFAULT_MAX_AGENTS,
        max_capabilities: int = DEFAULT_MAX_CAPABILITIES,
    ) -> None:
        self.heartbeat_timeout = heartbeat_timeout
        self.forget_after = forget_after
        self.window = window
        self.max_agents = max_agents
        self.max_capabilities = max_capabilities
        self._agents: dict[str, _Agent] = {}
        # live agents, least recently heard of first; gone ones, longest gone first
        self._live: OrderedDict[str, _Agent] = OrderedDict()
        self._gone: OrderedDict[str, _Agent] = OrderedDict()
        # capability -> how many tracked agents show it; those none shows -> when
        # last named, least recently first (each capability is in one of the two)
        self._claims: dict[str, int] = {}
        self._unclaimed: OrderedDict[str, float] = OrderedDict()

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._agents

    def __len__(self) -> int:
        return len(self._agents)

    @property
    def capability_count(self) -> int:
        """Capabilities tracked now."""
        return len(self._claims) + len(self._unclaimed)

    def _has_room(self, agent_id: str) -> bool:
        """Whether ``agent_id`` is tracked or can be (forgetting a gone agent if need be)."""
        return agent_id in self._agents or len(self._agents) < self.max_agents or bool(self._gone)

    def _agent(self, agent_id: str, now: float) -> tuple[_Agent, tuple[str, ...]]:
        """The agent, made if new (call ``_has_room`` first); the ids forgotten
        early to make room for it come second."""
        agent = self._agents.get(agent_id)
        if agent is not None:
            return agent, ()
        forgotten: tuple[str, ...] = ()
        if len(self._agents) >= self.max_agents:
            oldest = next(iter(self._gone))
            self._forget(oldest, now)
            forgotten = (oldest,)
        agent = _Agent(agent_id, now, TaskWindow(now, window=self.window))
        self._agents[agent_id] = agent
        self._live[agent_id] = agent
        return agent, forgotten

    def _forget(self, agent_id: str, now: float) -> None:
        agent = self._agents.pop(agent_id)
        self._live.pop(agent_id, None)
        self._gone.pop(agent_id, None)
        self._claim(agent.capabilities, (), now)

    def _claim(self, before: Sequence[str], after: Sequence[str], now: float) -> None:
        """An agent shows ``after`` instead of ``before``: a capability no agent
        shows any more starts ageing from ``now``."""
        if before == after:
            return
        claims, unclaimed = self._claims, self._unclaimed
        kept = set(before)
        for name in set(after) - kept:
            claims[name] = claims.get(name, 0) + 1
            unclaimed.pop(name, None)
        for name in kept - set(after):
            claims[name] -= 1
            if not claims[name]:
                del claims[name]
                unclaimed[name] = now

    def _go(self, agent: _Agent, state: str, now: float) -> None:
        agent.go(state, now)
        self._live.pop(agent.id, None)
        self._gone.pop(agent.id, None)
        self._gone[agent.id] = agent  # gone_since is now: the newest gone

    def _live_again(
        self, agent: _Agent, capabilities: Sequence[str], max_concurrency: int, now: float
    ) -> None:
        before = agent.capabilities
        agent.live(capabilities, max_concurrency)
        self._claim(before, agent.capabilities, now)
        if self._gone.pop(agent.id, None) is not None:
            self._live[agent.id] = agent

    def _heard(self, agent: _Agent, now: float) -> None:
        agent.heard = now
        if agent.id in self._live:
            self._live.move_to_end(agent.id)

    def _admit(self, names: Sequence[str], now: float) -> tuple[tuple[str, ...], int]:
        """The names of ``names`` that are (or now become) tracked, and how many were not."""
        unclaimed = self._unclaimed
        admitted: list[str] = []
        refused = max(0, len(names) - MAX_CAPABILITIES_PER_AGENT)
        for name in names[:MAX_CAPABILITIES_PER_AGENT]:
            if name in unclaimed:
                unclaimed.move_to_end(name)
            elif name not in self._claims:
                if self.capability_count >= self.max_capabilities:
                    refused += 1
                    continue
            if name not in self._claims:
                unclaimed[name] = now
            admitted.append(name)
        return tuple(admitted), refused

    def discovered(
        self, agent_id: str, capabilities: Sequence[str], max_concurrency: int, now: float
    ) -> Tracked:
        """An agent found by discovery; not tracked (and nothing done) if already
        heard of, since its own events are newer than what discovery says."""
        if agent_id in self._agents:
            return Tracked(False)
        if not self._has_room(agent_id):
            return Tracked(False, left_out=("agent",))
        names, refused = self._admit(tuple(capabilities), now)
        agent, forgotten = self._agent(agent_id, now)
        left_out = ("capability",) * refused
        self._live_again(agent, names, max_concurrency, now)
        return Tracked(True, names, forgotten, left_out)

    def observe(self, event: StatusEvent, now: float) -> Tracked:
        """Update the fleet from one event received at ``now``; returns what was taken."""
        if not self._has_room(event.agent):
            return Tracked(False, left_out=("agent",))
        if isinstance(event, TaskEvent):
            names, refused = self._admit((event.capability,) if event.capability else (), now)
        elif isinstance(event, Online | Heartbeat):
            names, refused = self._admit(event.capabilities, now)
        else:
            names, refused = (), 0
        left_out = ("capability",) * refused
        if isinstance(event, TaskEvent) and refused:
            return Tracked(False, left_out=left_out)
        agent, forgotten = self._agent(event.agent, now)
        self._heard(agent, now)
        if isinstance(event, Online):
            self._live_again(agent, names, event.max_concurrency, now)
            agent.state = "online"  # a restart under the same id: it serves again
            agent.running.clear()
            agent.unseen_running = 0
        elif isinstance(event, Heartbeat):
            self._live_again(agent, names, event.max_concurrency, now)
            if event.in_flight == 0:
                agent.running.clear()
            agent.unseen_running = max(0, event.in_flight - len(agent.running))
        elif isinstance(event, Offline):
            self._go(agent, "offline", now)
        elif isinstance(event, Accepted | Started):
            if agent.state not in _GONE and len(agent.running) < MAX_RUNNING_PER_AGENT:
                agent.running.add(event.task_id)
        elif isinstance(event, Completed | Failed | Cancelled):
            self._ended(agent, event, now)
        if isinstance(event, Accepted | Started | Completed | Failed | Cancelled):
            capability = event.capability
            shown = agent.capabilities
            if capability and len(shown) < MAX_CAPABILITIES_PER_AGENT and capability not in shown:
                agent.capabilities = (*shown, capability)
                self._claim(shown, agent.capabilities, now)
        return Tracked(True, names, forgotten, left_out)

    def _ended(self, agent: _Agent, event: Completed | Failed | Cancelled, now: float) -> None:
        if event.task_id in agent.running:
            agent.running.discard(event.task_id)
        elif agent.unseen_running:
            agent.unseen_running -= 1
        failed = isinstance(event, Failed)
        # a cancelled task has no handler time; a refused one never ran (its 0 ms
        # would make the fleet look faster the more it refuses)
        no_latency = isinstance(event, Cancelled) or rejection_reason(event) is not None
        agent.window.add(now, elapsed_ms=None if no_latency else event.elapsed_ms, failed=failed)
        error = event.error if isinstance(event, Failed) else None
        if error is not None and error.type == "draining" and agent.state == "online":
            agent.state = "draining"

    def sweep(self, now: float) -> Sweep:
        """Expire the silent, forget the long gone; returns their ids.

        Both lists are kept in the order they fall due, so a sweep looks only at
        the agents it changes, plus one."""
        expired: list[str] = []
        forgotten: list[str] = []
        for agent in self._live.values():
            if now - agent.heard <= self.heartbeat_timeout:
                break
            expired.append(agent.id)
        for agent_id in expired:
            self._go(self._agents[agent_id], "expired", now)
        for agent in self._gone.values():
            assert agent.gone_since is not None
            if now - agent.gone_since < self.forget_after:
                break
            forgotten.append(agent.id)
        for agent_id in forgotten:
            self._forget(agent_id, now)
        return Sweep(expired, forgotten)

    def forget_capabilities(self, now: float) -> list[str]:
        """Forget the capabilities no tracked agent shows and nobody has named for
        ``forget_after`` seconds; returns them."""
        forgotten: list[str] = []
        for name, heard in self._unclaimed.items():
            if now - heard < self.forget_after:
                break
            forgotten.append(name)
        for name in forgotten:
            del self._unclaimed[name]
        return forgotten

    def live_count(self) -> int:
        """Agents neither offline nor expired."""
        return len(self._live)

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
