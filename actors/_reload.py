"""Reloading the daemon's config on SIGHUP, without a restart.

A reload compares the agents of the new file with those running, slot by slot
(``AgentSlot``: an agent after replica expansion, known by its id): new ones
are added, gone ones are removed gracefully (their tasks in flight finish
within the grace period), changed ones are replaced (removed, then added), and
the others are not touched, so they serve on without a dropped task.

Every new agent is created before anything changes, so a config that fails to
load or to build is reported and the running agents go on as they were.
Settings that only a restart can change (the connection, the prefix, the
metrics address) are reported and ignored. Reloads run one at a time: a
SIGHUP during a reload asks for one more, which runs when it ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import anyio
import msgspec

from bus import ConfigError

from ._agent import Agent
from ._config import AgentSlot, DaemonConfig, agent_slots, build_agent
from ._host import AgentHost

__all__ = ["NEEDS_RESTART", "RELOADED_LINE", "ConfigReloader", "ReloadPlan", "plan_reload"]

log = logging.getLogger("callboard.daemon")

RELOADED_LINE = "callboard daemon reloaded"
"""Printed on stderr when a reload is done: ``+added -removed ~replaced agent(s); serving: ids``."""
NEEDS_RESTART = ("nats", "prefix", "metrics_address", "durable")
"""Settings a reload reports and ignores: the connection and the addresses others use."""
HOST_SETTINGS = ("grace_period", "heartbeat_interval", "max_delegation_depth", "max_payload")
"""Settings a reload applies to the running host (limits apply to the next task)."""


@dataclass
class ReloadPlan:
    """What a reload changes, with the new agents already created.

    Attributes:
        added: agents of new slots.
        removed: ids of running agents whose slot is gone.
        replaced: (running id, its new agent, the fields that changed).
        slots: the new config's slots, by key.
    """

    added: list[tuple[AgentSlot, Agent]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    replaced: list[tuple[str, AgentSlot, Agent, list[str]]] = field(default_factory=list)
    slots: dict[str, AgentSlot] = field(default_factory=dict)

    def new_agents(self) -> list[Agent]:
        """Every agent the plan created (to close them if it is not carried out)."""
        return [a for _, a in self.added] + [a for _, _, a, _ in self.replaced]


async def plan_reload(
    running: dict[str, tuple[AgentSlot, str]], config: DaemonConfig
) -> ReloadPlan:
    """Compare ``config`` with the running slots (key → slot, agent id) and create
    the agents it needs.

    Raises:
        ConfigError: an agent cannot be created; none of the plan's agents are
            left open.
    """
    plan = ReloadPlan(slots={s.key: s for s in agent_slots(config)})
    try:
        for key, slot in plan.slots.items():
            current = running.get(key)
            if current is None:
                plan.added.append((slot, build_agent(slot)))
            elif changed := slot.differs_from(current[0]):
                plan.replaced.append((current[1], slot, build_agent(slot), changed))
    except BaseException:
        for agent in plan.new_agents():
            with anyio.CancelScope(shield=True):
                await agent.aclose()
        raise
    plan.removed = [agent_id for key, (_, agent_id) in running.items() if key not in plan.slots]
    return plan


class ConfigReloader:
    """Applies reloads of the config file to a running host, one at a time.

    Args:
        host: the running host.
        config: the config it runs.
        agents: the hosted agents with their slots.
        load: reads the config file again (with the command line's overrides).
        announce: prints the line that says a reload is done.
    """

    def __init__(
        self,
        host: AgentHost,
        config: DaemonConfig,
        agents: Sequence[tuple[AgentSlot, Agent]],
        *,
        load: Callable[[], DaemonConfig],
        announce: Callable[[str], None],
    ) -> None:
        self.host = host
        self.config = config
        self.running = {slot.key: (slot, agent.id) for slot, agent in agents}
        self._load = load
        self._announce = announce
        self._send, self._receive = anyio.create_memory_object_stream[None](1)
        self._lock = anyio.Lock()  # adds and the shutdown take it: nothing joins a stopping host
        self._stopping = False

    def request(self) -> None:
        """Ask for a reload (from the signal loop); one pending already covers it."""
        try:
            self._send.send_nowait(None)
        except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    async def run(self) -> None:
        """Carry out the requested reloads until ``close``."""
        async with self._receive:
            async for _ in self._receive:
                if not self._stopping:
                    await self.reload()

    async def close(self) -> None:
        """Take no more reloads and stop every agent; an agent a reload is removing
        meanwhile finishes its own drain."""
        self._send.close()
        async with self._lock:
            self._stopping = True
            with anyio.CancelScope(shield=True):
                await self.host.shutdown()

    async def reload(self) -> None:
        """Read the config file and apply what changed; report a bad file and keep going."""
        try:
            config = self._load()
            plan = await plan_reload(self.running, config)
        except Exception as exc:  # an agent class may raise anything from its constructor
            problem = (
                exc.message if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
            )
            log.error("config reload failed, the running agents go on unchanged: %s", problem)
            return
        config = self._keep_restart_settings(config)
        self._apply_host_settings(config)
        self.config = config
        done = {"added": 0, "removed": 0, "replaced": 0}
        async with self._lock:
            for slot, agent in plan.added:
                if await self._add(slot, agent, "added"):
                    done["added"] += 1
        async with anyio.create_task_group() as tg:
            for agent_id in plan.removed:
                tg.start_soon(self._retire, agent_id, None, done)
            for agent_id, slot, agent, changed in plan.replaced:
                log.info("replacing agent %s: its %s changed", agent_id, ", ".join(changed))
                tg.start_soon(self._retire, agent_id, (slot, agent), done)
        serving = ", ".join(sorted(self.host.runners)) or "nothing"
        self._announce(
            f"{RELOADED_LINE}: +{done['added']} -{done['removed']} ~{done['replaced']} "
            f"agent(s); serving: {serving}"
        )

    def _keep_restart_settings(self, config: DaemonConfig) -> DaemonConfig:
        changed = [n for n in NEEDS_RESTART if getattr(config, n) != getattr(self.config, n)]
        if changed:
            log.warning(
                "config reload ignores the new %s: only a restart applies it", ", ".join(changed)
            )
        kept = {name: getattr(self.config, name) for name in NEEDS_RESTART}
        return msgspec.structs.replace(config, **kept)

    def _apply_host_settings(self, config: DaemonConfig) -> None:
        for name in HOST_SETTINGS:
            old, new = getattr(self.config, name), getattr(config, name)
            if old != new:
                log.info("config reload: %s %s -> %s", name, old, new)
        host = self.host
        host.grace_period = config.grace_period
        host.heartbeat_interval = config.heartbeat_interval
        host.max_delegation_depth = config.max_delegation_depth
        host.max_payload = config.max_payload
        for runner in host.runners.values():
            runner.max_delegation_depth = config.max_delegation_depth
            runner.max_payload = config.max_payload

    async def _add(self, slot: AgentSlot, agent: Agent, why: str) -> bool:
        """Host a new agent (the caller holds the lock); False if it could not start."""
        if self._stopping:
            await agent.aclose()
            return False
        try:
            await self.host.add(agent)
        except Exception as exc:
            log.error("config reload could not start agent %s: %s", agent.id, exc)
            await agent.aclose()
            return False
        self.running[slot.key] = (slot, agent.id)
        log.info("agent %s %s by a config reload", agent.id, why)
        return True

    async def _retire(
        self, agent_id: str, successor: tuple[AgentSlot, Agent] | None, done: dict[str, int]
    ) -> None:
        """Remove a running agent gracefully, then host its successor if it has one."""
        self.running = {k: v for k, v in self.running.items() if v[1] != agent_id}
        try:
            await self.host.remove(agent_id)
        except Exception as exc:
            log.error("config reload could not remove agent %s: %s", agent_id, exc)
            if successor is not None:
                await successor[1].aclose()
            return
        if successor is None:
            done["removed"] += 1
            log.info("agent %s removed by a config reload", agent_id)
            return
        async with self._lock:
            if await self._add(*successor, "replaced"):
                done["replaced"] += 1
