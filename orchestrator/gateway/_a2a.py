"""The gateway as an A2A agent (the official ``a2a-sdk``'s JSON-RPC server).

Its card (``/.well-known/agent-card.json``) lists the exposed, live
capabilities as skills. ``message/send`` and ``message/stream`` run one:

- the skill is the message's ``metadata.skill`` (or the request's), or the
  only skill when there is one;
- the skill ``ask``, or free text with no skill, is a request in words: the
  orchestrator's decompose-route-aggregate runs it over the exposed
  capabilities only (``_ask``), a ``working`` status per step's start and end;
- the payload is the first data part's ``data``, else the text parts, read as
  JSON when they parse (``{"input": ...}`` for a skill that does not take an
  object); ``metadata.timeout`` is the caller's deadline in seconds.

Task states, callboard → A2A: the gateway took it → ``submitted``; dispatched,
and each ``accepted``/``started``/``progress`` event → ``working`` (a status
message with the event); a result → ``completed`` with a ``result`` artifact
(the result, or ``{"result": value}`` when it is not an object); an error
reply, a timeout or no agent → ``failed`` (a data part ``{"error": {code,
type, message}}``); an unknown skill or unreadable message → ``rejected``;
``tasks/cancel`` → ``canceled``, and callboard's cancel reaches the agent.

A capability the config makes durable runs as a durable task whose id is the
A2A task's: ``tasks/get`` reads its record (see ``_a2a_tasks``), after a
restart and on any replica, and a deadline that passes leaves it ``working``
(it goes on). Other tasks live in the gateway's memory (tasks of this run).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import msgspec
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.apps import A2AStarletteApplication
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentSkill,
    DataPart,
    HTTPAuthSecurityScheme,
    Message,
    Part,
    SecurityScheme,
    TaskState,
    TextPart,
)
from starlette.routing import BaseRoute

from bus import CallboardError, Progress, TaskStillPending

from ._a2a_tasks import DurableBackedTaskStore
from ._ask import ASK_SKILL, ask
from ._catalog import WRAPPED_ARGUMENT
from ._config import GatewayConfig
from ._events import RelayedEvent
from ._gateway import Gateway, NotExposed

__all__ = ["A2A_PATH", "AGENT_CARD_PATH", "CapabilityExecutor", "a2a_routes", "agent_card"]

log = logging.getLogger("callboard.gateway.a2a")

A2A_PATH = "/a2a"
"""Where A2A's JSON-RPC requests go."""
AGENT_CARD_PATH = "/.well-known/agent-card.json"


class _Unreadable(Exception):
    """The message names no skill the gateway offers, or has no usable payload."""


def agent_card(gateway: Gateway, config: GatewayConfig, base_url: str) -> AgentCard:
    """The card: the gateway, its live skills, and the bearer scheme it requires."""
    from importlib.metadata import version

    skills = [
        AgentSkill(id=t.name, name=t.name, description=t.description, tags=list(t.keywords))
        for t in gateway.tools
    ]
    if ASK_SKILL not in config.capabilities:
        skills.append(
            AgentSkill(
                id=ASK_SKILL,
                name=ASK_SKILL,
                description=(
                    "A request in plain words (a text part), split into steps over the "
                    "other skills, each step's start and end streamed, then one answer."
                ),
                tags=["orchestrate"],
            )
        )
    return AgentCard(
        name=f"callboard gateway ({config.prefix})",
        description="The capabilities of a callboard agent mesh; each skill is a capability.",
        url=f"{base_url.rstrip('/')}{A2A_PATH}",
        version=version("callboard"),
        capabilities=AgentCapabilities(streaming=True),
        default_input_modes=["application/json", "text/plain"],
        default_output_modes=["application/json"],
        skills=skills,
        preferred_transport="JSONRPC",
        security_schemes={"bearer": SecurityScheme(root=HTTPAuthSecurityScheme(scheme="bearer"))},
        security=[{"bearer": []}],
    )


class CapabilityExecutor(AgentExecutor):
    """Runs an A2A task as a callboard task (see the module docstring for the mapping)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        """Run the message's skill and publish the task's states."""
        assert context.task_id is not None and context.context_id is not None
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        if context.current_task is None:
            await updater.submit()
        try:
            name, arguments, timeout = self._read(context)
            if name != ASK_SKILL or ASK_SKILL in self.gateway.config.capabilities:
                self.gateway.tool(name)
        except (_Unreadable, NotExposed) as exc:
            await updater.reject(message=updater.new_agent_message([_text(str(exc))]))
            return
        await updater.start_work()
        if name == ASK_SKILL and ASK_SKILL not in self.gateway.config.capabilities:
            await self._ask(updater, arguments, timeout)
            return

        async def on_event(event: RelayedEvent) -> None:
            state = type(event).__name__.lower()
            text = event.message if isinstance(event, Progress) and event.message else state
            data: dict[str, Any] = {"state": state, "agent": event.agent}
            if isinstance(event, Progress) and event.data is not None:
                data["data"] = event.data
            await updater.update_status(
                TaskState.working,
                message=updater.new_agent_message([_text(text), _data(data)]),
            )

        try:
            result = await self.gateway.call(
                name,
                arguments,
                protocol="a2a",
                timeout=timeout,
                on_event=on_event,
                task_id=context.task_id,
            )
        except TaskStillPending as exc:  # a durable task goes on: tasks/get follows it
            await updater.update_status(
                TaskState.working, message=updater.new_agent_message([_text(exc.message)])
            )
            return
        except CallboardError as exc:
            await updater.failed(message=updater.new_agent_message(_error_parts(exc)))
            return
        value = result if isinstance(result, dict) else {"result": result}
        await updater.add_artifact([_data(value)], name="result")
        await updater.complete()

    async def _ask(self, updater: TaskUpdater, arguments: Any, timeout: float | None) -> None:
        """Run a request in plain words over the exposed capabilities, a status per step."""
        request = arguments.get(WRAPPED_ARGUMENT) if isinstance(arguments, dict) else None
        if not isinstance(request, str) or not request.strip():
            await updater.reject(
                message=updater.new_agent_message(
                    [_text("ask takes a request in words: a text part")]
                )
            )
            return

        async def on_step(seq: int, capability: str, state: str, detail: dict[str, Any]) -> None:
            data = {"step": seq, "capability": capability, "state": state, **detail}
            await updater.update_status(
                TaskState.working,
                message=updater.new_agent_message(
                    [_text(f"step {seq} ({capability}): {state}"), _data(data)]
                ),
            )

        try:
            run = await ask(self.gateway, request, timeout=timeout, on_step=on_step)
        except CallboardError as exc:
            await updater.failed(message=updater.new_agent_message(_error_parts(exc)))
            return
        answer = msgspec.to_builtins(run)
        await updater.add_artifact(
            [_data({"answer": answer["answer"], "steps": answer["steps"]})], name="result"
        )
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        """Send callboard's cancel and say ``canceled``; the request handler then
        cancels ``execute`` if it runs here. The cancel is sent here too, for a
        durable task that another run or replica of the gateway submitted, and
        stored for one that no agent has taken yet."""
        assert context.task_id is not None and context.context_id is not None
        reason = "cancelled by the A2A caller"
        await self.gateway.orchestrator.client.cancel(context.task_id, reason)
        known = context.current_task
        skill = (known.metadata or {}).get("skill") if known is not None else None
        # a durable task still queued is cancelled for good: no agent will run it
        await self.gateway.cancel_durable(
            context.task_id, skill if isinstance(skill, str) else None, reason
        )
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()

    def _read(self, context: RequestContext) -> tuple[str, Any, float | None]:
        message = context.message
        if message is None:
            raise _Unreadable("the request has no message")
        meta = {**(context.metadata or {}), **(message.metadata or {})}
        name = meta.get("skill")
        arguments = _arguments(message)
        if not isinstance(name, str) and isinstance(arguments.get(WRAPPED_ARGUMENT), str):
            name = ASK_SKILL  # free text and no skill: a request in words
        if not isinstance(name, str):
            tools = self.gateway.tools
            if len(tools) != 1:
                offered = ", ".join(t.name for t in tools) or "none"
                raise _Unreadable(f"say which skill in the message's metadata.skill ({offered})")
            name = tools[0].name
        timeout = meta.get("timeout")
        return (
            name,
            arguments,
            float(timeout) if isinstance(timeout, int | float) else None,
        )


def _arguments(message: Message) -> Any:
    for part in message.parts:
        if isinstance(part.root, DataPart):
            return part.root.data
    text = "\n".join(p.root.text for p in message.parts if isinstance(p.root, TextPart))
    if not text:
        raise _Unreadable("the message has no data or text part")
    try:
        value = msgspec.json.decode(text)
    except (msgspec.DecodeError, RecursionError):  # not JSON to us: the text itself
        value = text
    return value if isinstance(value, dict) else {WRAPPED_ARGUMENT: value}


def _error_parts(exc: CallboardError) -> list[Part]:
    error = {"code": exc.code, "type": exc.type, "message": exc.message}
    return [_text(f"error {exc.code} ({exc.type}): {exc.message}"), _data({"error": error})]


def _text(text: str) -> Part:
    return Part(root=TextPart(text=text))


def _data(data: dict[str, Any]) -> Part:
    return Part(root=DataPart(data=data))


def a2a_routes(
    gateway: Gateway, config: GatewayConfig, base_url: Callable[[], str]
) -> list[BaseRoute]:
    """The A2A routes: the card (its skills as live as the tools) and JSON-RPC.

    ``base_url`` is asked at each request for the card's ``url`` (the port is
    known only once the server listens).
    """
    card = agent_card(gateway, config, base_url())

    def live_card(_card: AgentCard) -> AgentCard:
        return agent_card(gateway, config, base_url())

    durable = config.durable_capabilities
    store = (
        DurableBackedTaskStore(gateway.orchestrator.durable.client, durable)
        if durable
        else InMemoryTaskStore()
    )
    handler = DefaultRequestHandler(agent_executor=CapabilityExecutor(gateway), task_store=store)
    app = A2AStarletteApplication(agent_card=card, http_handler=handler, card_modifier=live_card)
    return list(app.routes(agent_card_url=AGENT_CARD_PATH, rpc_url=A2A_PATH))
