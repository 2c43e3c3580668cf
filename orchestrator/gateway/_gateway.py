"""The gateway's core, shared by its MCP and A2A faces: what is offered, and
how an outside call becomes a task on the bus.

A call is the Orchestrator's dispatch with the caller's deadline (bounded by
the config), its cancellation (cancelling the call sends callboard's cancel,
as ``TaskClient`` does for any cancelled request), and the task's status
events relayed to the caller as they come.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream
from nats.aio.client import Client

from bus import AgentMessage, BadInput, CallboardError, dispatch_outcome, new_task_id
from bus._cancel_token import CancelKeys
from bus.durable import TaskRecord

from .._orchestrator import Orchestrator
from ._catalog import ExposedTool, ToolCatalog
from ._config import GatewayConfig
from ._events import RelayedEvent, TaskEvents
from ._metrics import GatewayMetrics

__all__ = ["EventSink", "Gateway", "NotExposed"]

log = logging.getLogger("callboard.gateway")

EventSink = Callable[[RelayedEvent], Awaitable[None]]
"""Told of each relayed status event of a call's task, in order."""
_DRAIN_AFTER_REPLY = 1.0
"""Seconds to finish relaying the events that arrived before the reply."""


class NotExposed(CallboardError):
    """The gateway does not offer this capability (not in its config, or no agent is live)."""

    code = 404
    type = "unknown_tool"


class Gateway:
    """The mesh as seen from outside: the exposed tools and the calls to them.

    An async context manager: on entry it follows the live agents and their
    task events; on exit it stops.

    Args:
        nc: a connected client (the gateway's own NATS user).
        config: what is exposed, and the deadlines.
        metrics: where to count calls; None counts nothing.
        cancel_secret: the secret its cancel tokens derive from; replicas and
            restarts that share it can cancel each other's durable tasks
            (random when None: only this process can).

    Attributes:
        catalog: the tools offered now.
        on_tools_changed: listeners called after the tools change (the MCP
            server tells its sessions ``notifications/tools/list_changed``).
    """

    def __init__(
        self,
        nc: Client,
        config: GatewayConfig,
        *,
        metrics: GatewayMetrics | None = None,
        cancel_secret: bytes | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.orchestrator = Orchestrator(
            nc, prefix=config.prefix, name=config.name, default_timeout=config.default_timeout
        )
        keys = CancelKeys(cancel_secret)  # security: one secret for core and durable cancels
        self.orchestrator.client.cancel_keys = self.orchestrator.durable.client.cancel_keys = keys
        registry = self.orchestrator.registry
        if metrics is not None:
            registry.count_refusals(metrics.refusals)
        self.catalog = ToolCatalog(nc, self.orchestrator.subjects, registry, config)
        self.events = TaskEvents(nc, self.orchestrator.subjects, registry, metrics)
        self.on_tools_changed: list[Callable[[], Awaitable[None]]] = []
        self._task_group: anyio.abc.TaskGroup | None = None
        self.stopping = False
        """Set when the gateway stops: the calls it cancels then are not the callers' cancels."""

    async def __aenter__(self) -> Gateway:
        await self.orchestrator.__aenter__()
        try:
            await self.events.start()
            await self.catalog.refresh()
            self._set_tools_gauge()
            self._task_group = anyio.create_task_group()
            await self._task_group.__aenter__()
            self._task_group.start_soon(self.catalog.follow, self._tools_changed)
        except BaseException:
            await self.events.stop()
            await self.orchestrator.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._task_group is not None:
                self._task_group.cancel_scope.cancel()
                await self._task_group.__aexit__(None, None, None)
                self._task_group = None
        finally:
            await self.events.stop()
            await self.orchestrator.__aexit__(exc_type, exc, tb)

    async def cancel_durable(
        self, task_id: str, capability: str | None, reason: str
    ) -> TaskRecord | None:
        """Cancel a durable task of an exposed durable capability (``capability``, if
        known): queued, it never runs; running, its agent stops it. None: no such
        task here (or its record could not be read; the broadcast went anyway)."""
        durable = self.config.durable_capabilities
        client = self.orchestrator.durable.client
        for name in [capability] if capability in durable else durable:
            try:
                return await client.cancel(task_id, capability=name, reason=reason)
            except BadInput:
                return None  # not a durable task id
            except CallboardError as exc:
                if exc.code != 404:
                    log.warning("cancelling durable task %s failed: %s", task_id, exc)
            except Exception as exc:  # nats-py's own errors: the server is away
                log.warning("cancelling durable task %s failed: %s", task_id, exc)
        return None

    def _set_tools_gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.tools.set(len(self.catalog.tools))

    async def _tools_changed(self) -> None:
        self._set_tools_gauge()
        for listener in list(self.on_tools_changed):
            try:
                await listener()
            except Exception as exc:
                log.debug("a tools-changed listener failed: %s", exc)

    @property
    def tools(self) -> list[ExposedTool]:
        """The tools offered now, by name."""
        return list(self.catalog.tools.values())

    def tool(self, name: str) -> ExposedTool:
        """The tool of that name.

        Raises:
            NotExposed: it is not exposed, or no agent serves it now.
        """
        tool = self.catalog.tools.get(name)
        if tool is None:
            if name in self.config.capabilities:
                raise NotExposed(f"no agent serves {name!r} now; try again when one is up")
            raise NotExposed(f"unknown tool {name!r}: this gateway does not offer it")
        return tool

    async def call(
        self,
        name: str,
        arguments: Any,
        *,
        protocol: str,
        timeout: float | None = None,
        on_event: EventSink | None = None,
        task_id: str | None = None,
    ) -> Any:
        """Run one exposed capability and return its result.

        Args:
            name: the tool (capability) name.
            arguments: the tool's arguments (the payload, or ``{"input": payload}``
                when the capability does not take an object).
            protocol: ``mcp`` or ``a2a``, for the metrics.
            timeout: the caller's deadline in seconds; bounded by ``max_timeout``.
            on_event: told of the task's accepted, started and progress events.
            task_id: the task's id; a new one when None (a durable task's
                must be a valid durable id).

        Raises:
            NotExposed: the tool is not offered.
            DispatchError: the task failed (its subclass and ``code`` say how);
                ``TaskStillPending`` when a durable task outlives the deadline.
        """
        task_id = task_id or new_task_id()
        durable = False
        try:
            tool = self.tool(name)
            payload = tool.payload(arguments) if isinstance(arguments, dict) else arguments
            budget = self.config.timeout_for(name, timeout)
            durable = self.config.is_durable(name)
            with self.events.watch(task_id, name) as events:
                if on_event is None:
                    reply = await self.orchestrator.request(
                        name, payload, timeout=budget, task_id=task_id, durable=durable
                    )
                else:
                    reply = await self._relayed(
                        name, payload, budget, task_id, events, on_event, durable=durable
                    )
        except BaseException as exc:
            self._count(protocol, name, exc)
            if durable and not self.stopping and isinstance(exc, anyio.get_cancelled_exc_class()):
                # the caller cancelled (a durable wait sends no cancel of its own); a
                # gateway that stops leaves its durable tasks running, as any caller does
                with anyio.CancelScope(shield=True):
                    await self.cancel_durable(task_id, name, "cancelled by the caller")
            raise
        self._count(protocol, name, None)
        return reply.payload

    async def _relayed(
        self,
        name: str,
        payload: Any,
        budget: float,
        task_id: str,
        events: MemoryObjectReceiveStream[RelayedEvent],
        on_event: EventSink,
        *,
        durable: bool = False,
    ) -> AgentMessage:
        relaying = anyio.Lock()

        async def relay() -> None:
            async for event in events:
                async with relaying:
                    await _told(on_event, event)

        failure: Exception | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(relay)
            try:
                reply = await self.orchestrator.request(
                    name, payload, timeout=budget, task_id=task_id, durable=durable
                )
            except Exception as exc:  # raised after the group, not inside its exception group
                failure = exc
            async with relaying:  # an event being relayed is relayed whole
                tg.cancel_scope.cancel()
        if failure is not None:
            raise failure
        # the events that came before the reply are relayed before the result
        with anyio.move_on_after(_DRAIN_AFTER_REPLY):
            while True:
                try:
                    event = events.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
                await _told(on_event, event)
        return reply

    def _count(self, protocol: str, name: str, exc: BaseException | None) -> None:
        if self.metrics is None:
            return
        if isinstance(exc, NotExposed):
            outcome = "not_exposed"
        else:
            outcome = "ok" if exc is None else dispatch_outcome(exc)
        capability = name if name in self.config.capabilities else "other"
        self.metrics.calls.labels(protocol, capability, outcome).inc()


async def _told(on_event: EventSink, event: RelayedEvent) -> None:
    """Relay one event; a caller that cannot hear it loses the event, not the task."""
    try:
        await on_event(event)
    except Exception as exc:
        log.debug("could not relay a %s event: %s", type(event).__name__, exc)
