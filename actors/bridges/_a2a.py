"""``type = "a2a"``: a capability served by forwarding to a remote A2A agent.

The agent finds the remote agent by its card (``/.well-known/agent-card.json``
under ``url``) on its first task, then sends each task as an A2A message: a
JSON object payload as a data part, anything else as text, and ``skill`` in
the message's metadata. The remote task's states map back (see the README):
``completed`` → the result (the first artifact's data, or its text);
``working`` status messages → ``progress`` events; ``failed`` → an error with
the remote's code when it gives one (a data part ``{"error": {code, ...}}``),
else 500; ``rejected`` → 400; ``canceled`` → 499; a task this agent cancels is
cancelled on the remote agent too.
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

import anyio
import httpx
import msgspec
from a2a.client import A2ACardResolver, Client, ClientConfig, ClientFactory
from a2a.types import (
    DataPart,
    Message,
    Part,
    Role,
    Task,
    TaskIdParams,
    TaskState,
    TaskStatusUpdateEvent,
    TextPart,
)

from bus import AgentMessage, ConfigError, TaskError

from .._agent import Agent, Capability

__all__ = ["A2ABridge", "remote_result"]

log = logging.getLogger("callboard.bridges.a2a")

_CANCEL_WAIT = 5.0
"""Seconds to tell the remote agent a task was cancelled."""


class A2ABridge(Agent):
    """Serves one capability by forwarding its tasks to a remote A2A agent.

    Args:
        agent_id: the agent id.
        url: the remote agent's base URL (its card is under it).
        capability: the capability to serve.
        skill: the remote skill to ask for (``metadata.skill``); none when None.
        description: the capability's description.
        token_env: send ``Authorization: Bearer $token_env``.
        card_path: the card's path under ``url``.
        max_concurrency: tasks run at once.
        default_timeout: seconds a task may run when its sender set no deadline.
    """

    kind = "a2a"

    def __init__(
        self,
        agent_id: str | None = None,
        *,
        url: str,
        capability: str,
        skill: str | None = None,
        description: str = "",
        token_env: str | None = None,
        card_path: str = "/.well-known/agent-card.json",
        max_concurrency: int | None = None,
        default_timeout: float | None = None,
    ) -> None:
        self.url = url
        self.skill = skill
        self.card_path = card_path
        self._headers: dict[str, str] = {}
        if token_env:
            token = os.environ.get(token_env)
            if not token:
                raise ConfigError(f"a2a bridge: {token_env} is not set (token_env)")
            self._headers["Authorization"] = f"Bearer {token}"
        spec = Capability(
            name=capability, description=description or f"the remote A2A agent at {url}"
        )
        super().__init__(
            agent_id,
            capabilities=[spec],
            max_concurrency=max_concurrency,
            default_timeout=default_timeout,
        )
        self._http: httpx.AsyncClient | None = None
        self._client: Client | None = None
        self._connecting = anyio.Lock()

    async def _remote(self) -> Client:
        async with self._connecting:
            if self._client is not None:
                return self._client
            http = httpx.AsyncClient(headers=self._headers, timeout=httpx.Timeout(30, read=None))
            try:
                resolver = A2ACardResolver(http, self.url, agent_card_path=self.card_path)
                card = await resolver.get_agent_card()
            except Exception as exc:
                await http.aclose()
                raise TaskError(
                    f"the A2A agent at {self.url} cannot be reached: {exc}",
                    code=503,
                    type="unavailable",
                ) from exc
            config = ClientConfig(httpx_client=http, streaming=bool(card.capabilities.streaming))
            self._http, self._client = http, ClientFactory(config).create(card)
            return self._client

    async def handle(self, task: AgentMessage) -> Any:
        """Send the task to the remote agent and wait for its final state."""
        client = await self._remote()
        request = Message(
            role=Role.user,
            parts=[_part(task.payload)],
            message_id=uuid.uuid4().hex,
            metadata={"skill": self.skill} if self.skill else None,
        )
        remote: Task | None = None
        try:
            async for event in client.send_message(request):
                if isinstance(event, Message):
                    return _message_value(event)
                remote, update = event
                if isinstance(update, TaskStatusUpdateEvent) and update.status.message:
                    if update.status.state == TaskState.working:
                        await self.context.progress(_text_of(update.status.message))
        except anyio.get_cancelled_exc_class():
            if remote is not None:
                with anyio.CancelScope(shield=True), anyio.move_on_after(_CANCEL_WAIT):
                    try:
                        await client.cancel_task(TaskIdParams(id=remote.id))
                    except Exception as exc:
                        log.debug("could not cancel remote task %s: %s", remote.id, exc)
            raise
        if remote is None:
            raise TaskError(f"the A2A agent at {self.url} sent no task", code=500)
        return remote_result(remote)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        if self._http is not None:
            await self._http.aclose()
            self._http, self._client = None, None


def remote_result(task: Task) -> Any:
    """The result of a remote task in a final state, or the error it maps to.

    Raises:
        TaskError: the remote task did not complete (its code, or 500/400/499).
    """
    state = task.status.state
    if state == TaskState.completed:
        for artifact in task.artifacts or ():
            return _parts_value(artifact.parts)
        return _message_value(task.status.message) if task.status.message else None
    message = _text_of(task.status.message) if task.status.message else state.value
    if state == TaskState.failed:
        error = _error_of(task.status.message)
        code, kind, text = error.get("code"), error.get("type"), error.get("message")
        raise TaskError(
            text if isinstance(text, str) else message,
            code=code if isinstance(code, int) and 400 <= code <= 599 else 500,
            type=kind if isinstance(kind, str) else "remote_failed",
        )
    if state == TaskState.rejected:
        raise TaskError(f"the remote agent rejected the task: {message}", code=400, type="rejected")
    if state == TaskState.canceled:
        raise TaskError("the remote agent cancelled the task", code=499, type="cancelled")
    raise TaskError(f"the remote task ended {state.value}: {message}", code=500, type="remote")


def _part(payload: Any) -> Part:
    if isinstance(payload, dict):
        return Part(root=DataPart(data=payload))
    text = payload if isinstance(payload, str) else msgspec.json.encode(payload).decode()
    return Part(root=TextPart(text=text))


def _parts_value(parts: list[Part]) -> Any:
    for part in parts:
        if isinstance(part.root, DataPart):
            return part.root.data
    return "\n".join(p.root.text for p in parts if isinstance(p.root, TextPart))


def _message_value(message: Message) -> Any:
    return _parts_value(message.parts)


def _text_of(message: Message) -> str:
    return "\n".join(p.root.text for p in message.parts if isinstance(p.root, TextPart))


def _error_of(message: Message | None) -> dict[str, Any]:
    for part in message.parts if message is not None else ():
        if isinstance(part.root, DataPart) and isinstance(part.root.data.get("error"), dict):
            error: dict[str, Any] = part.root.data["error"]
            return error
    return {}
