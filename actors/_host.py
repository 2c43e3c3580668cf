"""``AgentHost``: hosts agents on one connection, with heartbeats and a
graceful shutdown (stop intake, finish in-flight tasks within a grace period,
cancel the rest with a 503 reply, say ``offline``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from types import TracebackType

import anyio
from anyio.abc import TaskGroup
from nats.aio.client import Client

from bus import DEFAULT_PREFIX, AgentMetrics, ConfigError, Subjects, TaskClient
from bus.durable import DurableNames, DurableSettings, TaskStore, ensure_durable

from ._agent import Agent
from ._durable_worker import DurableWorker
from ._runner import DEFAULT_MAX_DELEGATION_DEPTH, DEFAULT_MAX_PAYLOAD, AgentRunner

__all__ = ["DEFAULT_GRACE_PERIOD", "DEFAULT_HEARTBEAT_INTERVAL", "AgentHost", "serve"]

log = logging.getLogger("callboard.host")

DEFAULT_HEARTBEAT_INTERVAL = 5.0
"""Seconds between heartbeats; registries drop an agent after a few missed ones."""
DEFAULT_GRACE_PERIOD = 10.0
"""Seconds a shutdown waits for in-flight tasks before cancelling them."""


class AgentHost:
    """Hosts agents on a NATS connection for the duration of an ``async with``.

    On entry every agent is subscribed and has said ``online`` (the server has
    confirmed the subscriptions), so a task sent right after is served. On
    exit the host stops taking tasks, lets in-flight ones finish for up to
    ``grace_period`` seconds, cancels the rest with a 503 reply, and says
    ``offline``.

    Args:
        nc: a connected nats-py client.
        agents: the agents to host.
        prefix: the subject prefix of the system.
        heartbeat_interval: seconds between heartbeats.
        grace_period: seconds to wait for in-flight tasks on shutdown.
        max_delegation_depth: longest delegation chain an agent accepts.
        max_payload: largest task payload an agent accepts, in bytes.
        metrics: where to count the agents' tasks; None counts nothing (and
            costs nothing).
        durable: also serve durable tasks from JetStream with these settings
            (streams, bucket and consumers are created or updated at start);
            None serves core request-reply only.

    Attributes:
        agent_states: ``serving``, ``draining`` or ``stopped`` per agent id; a
            new mapping replaces it on every change, so any thread may read it.
    """

    def __init__(
        self,
        nc: Client,
        agents: Sequence[Agent] = (),
        *,
        prefix: str = DEFAULT_PREFIX,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        grace_period: float = DEFAULT_GRACE_PERIOD,
        max_delegation_depth: int = DEFAULT_MAX_DELEGATION_DEPTH,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        metrics: AgentMetrics | None = None,
        durable: DurableSettings | None = None,
    ) -> None:
        self.nc = nc
        self.subjects = Subjects(prefix)
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.max_delegation_depth = max_delegation_depth
        self.max_payload = max_payload
        self.metrics = metrics
        self.agent_states: Mapping[str, str] = {}
        self._pending = list(agents)
        self.runners: dict[str, AgentRunner] = {}
        self.durable = durable
        self.durable_workers: dict[str, DurableWorker] = {}
        self._durable_store: TaskStore | None = None
        self._task_group: TaskGroup | None = None
        self._closed = False

    @property
    def agents(self) -> list[Agent]:
        """The agents being hosted."""
        return [r.agent for r in self.runners.values()]

    @property
    def in_flight(self) -> int:
        """Tasks running now, over all agents."""
        return sum(r.in_flight for r in self.runners.values())

    async def __aenter__(self) -> AgentHost:
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        try:
            if self.durable is not None:
                names = DurableNames(self.subjects.prefix)
                js = self.nc.jetstream(timeout=5.0)
                await ensure_durable(js, names, self.durable)
                self._durable_store = TaskStore(self.nc, js, names)
                if self.metrics is not None:  # a forged cancel request is a refused message
                    self._durable_store.on_forged = self.metrics.refusals.counter("cancel_token")
            for agent in self._pending:
                await self.add(agent)
            self._pending = []
            self._task_group.start_soon(self._heartbeats)
        except BaseException:
            self._task_group.cancel_scope.cancel()
            await self._task_group.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._task_group is not None
        with anyio.CancelScope(shield=True):
            await self.shutdown()
        self._task_group.cancel_scope.cancel()
        return await self._task_group.__aexit__(exc_type, exc, tb)

    async def add(self, agent: Agent) -> AgentRunner:
        """Start hosting one more agent (also while running, e.g. on a config reload)."""
        if self._task_group is None or self._closed:
            raise ConfigError("AgentHost.add needs a running host (inside 'async with')")
        if agent.id in self.runners:
            raise ConfigError(f"an agent with id {agent.id!r} is already hosted here")
        client = TaskClient(
            self.nc,
            prefix=self.subjects.prefix,
            sender=agent.id,
            default_timeout=agent.default_timeout,
        )
        runner = AgentRunner(
            self.nc,
            agent,
            self.subjects,
            client=client,
            max_delegation_depth=self.max_delegation_depth,
            max_payload=self.max_payload,
            metrics=self.metrics,
        )
        self.runners[agent.id] = runner
        await runner.start(self._task_group)
        if self.durable is not None and self._durable_store is not None:
            store = self._durable_store
            worker = DurableWorker(runner, store.js, store, store.names, self.durable)
            await self._task_group.start(worker.run)
            self.durable_workers[agent.id] = worker
        self._set_states([agent.id], "serving")
        await self.nc.flush()
        return runner

    async def remove(self, agent_id: str, *, grace_period: float | None = None) -> None:
        """Stop hosting one agent gracefully; the others keep serving."""
        runner = self.runners.pop(agent_id, None)
        if runner is None:
            raise ConfigError(f"no agent with id {agent_id!r} is hosted here")
        await self._stop([runner], self.grace_period if grace_period is None else grace_period)
        self._set_states([agent_id], None)
        if runner.series is not None:
            runner.series.remove()

    async def shutdown(self) -> None:
        """Stop every agent gracefully; idempotent."""
        if self._closed:
            return
        self._closed = True
        runners, self.runners = list(self.runners.values()), {}
        await self._stop(runners, self.grace_period)
        try:
            await self.nc.flush()
        except Exception as exc:
            log.debug("flush on shutdown failed: %s", exc)

    async def _stop(self, runners: list[AgentRunner], grace_period: float) -> None:
        ids = [r.agent.id for r in runners]
        self._set_states(ids, "draining")
        workers = [w for w in map(self.durable_workers.pop, ids, [None] * len(ids)) if w]
        for worker in workers:
            worker.stop()
        async with anyio.create_task_group() as tg:
            for runner in runners:
                tg.start_soon(runner.stop_intake)
        busy = sum(r.in_flight for r in runners)
        if busy:
            log.info("waiting up to %gs for %d task(s) in flight", grace_period, busy)
        with anyio.move_on_after(grace_period if math.isfinite(grace_period) else None):
            for runner in runners:
                await runner.wait_idle()
            for worker in workers:
                await worker.stopped.wait()
        cancelled = sum(r.cancel_all("draining") for r in runners)
        if cancelled:
            log.warning("grace period over: cancelled %d task(s) with a 503 reply", cancelled)
            with anyio.move_on_after(5.0):
                for runner in runners:
                    await runner.wait_idle()
                for worker in workers:
                    await worker.stopped.wait()
        for runner in runners:
            await runner.close()
            await _close_agent(runner.agent)
        self._set_states(ids, "stopped")

    def _set_states(self, agent_ids: Sequence[str], state: str | None) -> None:
        """Replace ``agent_states`` (None drops the agents from it)."""
        states = dict(self.agent_states)
        for agent_id in agent_ids:
            if state is None:
                states.pop(agent_id, None)
            else:
                states[agent_id] = state
        self.agent_states = states

    async def _heartbeats(self) -> None:
        while True:
            await anyio.sleep(self.heartbeat_interval)
            for runner in list(self.runners.values()):
                await runner.heartbeat(self.heartbeat_interval)


async def _close_agent(agent: Agent) -> None:
    """Let the agent release what it holds (a model's HTTP client); never fail the stop."""
    try:
        await agent.aclose()
    except Exception:
        log.exception("agent %s failed to close cleanly", agent.id)


def serve(nc: Client, agents: Sequence[Agent], **options: object) -> AgentHost:
    """Host ``agents`` on ``nc``: ``async with serve(nc, [MathAgent()]): ...``.

    Keyword options are those of ``AgentHost``.
    """
    return AgentHost(nc, agents, **options)  # type: ignore[arg-type]
