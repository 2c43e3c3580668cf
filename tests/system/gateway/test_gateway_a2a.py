"""``callboard gateway`` as an A2A agent, driven by the official ``a2a-sdk`` client:
the card, message/send, message/stream, tasks/get and tasks/cancel.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from a2a.client import A2ACardResolver, Client, ClientConfig, ClientFactory
from a2a.types import (
    AgentCard,
    DataPart,
    Message,
    Part,
    Role,
    Task,
    TaskIdParams,
    TaskQueryParams,
    TaskState,
    TaskStatusUpdateEvent,
    TextPart,
)
from gateway_support import Mesh, Running

pytestmark = [pytest.mark.anyio, pytest.mark.system]


@asynccontextmanager
async def a2a_client(
    running: Running, *, streaming: bool = True
) -> AsyncIterator[tuple[AgentCard, Client]]:
    headers = {"Authorization": f"Bearer {running.token}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        card = await A2ACardResolver(http, running.url).get_agent_card()
        client = ClientFactory(ClientConfig(httpx_client=http, streaming=streaming)).create(card)
        yield card, client


def message(skill: str, data: dict[str, Any] | None = None, text: str | None = None) -> Message:
    part = (
        Part(root=DataPart(data=data)) if data is not None else Part(root=TextPart(text=text or ""))
    )
    return Message(
        role=Role.user, parts=[part], message_id=uuid.uuid4().hex, metadata={"skill": skill}
    )


async def final_task(client: Client, request: Message) -> Task:
    task: Task | None = None
    async for event in client.send_message(request):
        assert isinstance(event, tuple), event
        task = event[0]
    assert task is not None
    return task


def data_of(task: Task) -> dict[str, Any]:
    assert task.artifacts, task
    part = task.artifacts[0].parts[0].root
    assert isinstance(part, DataPart)
    return part.data


def status_data(task: Task) -> dict[str, Any]:
    assert task.status.message is not None
    parts = [p.root for p in task.status.message.parts if isinstance(p.root, DataPart)]
    return parts[0].data


async def test_the_card_lists_the_live_exposed_capabilities_and_the_bearer_scheme(
    gateway: Running,
) -> None:
    async with a2a_client(gateway) as (card, _client):
        pass
    assert {s.id for s in card.skills} == {"math", "steps", "refuse", "ask"}
    assert card.url == f"{gateway.url}/a2a"
    assert card.capabilities.streaming is True
    assert card.security == [{"bearer": []}]
    steps = next(s for s in card.skills if s.id == "steps")
    assert steps.description == "Reports progress steps, then answers how many it did."


async def test_message_send_runs_a_capability_and_tasks_get_finds_it(gateway: Running) -> None:
    async with a2a_client(gateway, streaming=False) as (_card, client):
        task = await final_task(client, message("math", {"expression": "6*7"}))
        again = await client.get_task(TaskQueryParams(id=task.id))
        text = await final_task(client, message("math", text='{"expression": "1234*5678"}'))
    assert task.status.state == TaskState.completed
    assert data_of(task) == {"value": 42}
    assert again.status.state == TaskState.completed and data_of(again) == {"value": 42}
    assert data_of(text) == {"value": 7006652}


async def test_message_stream_relays_the_status_events(gateway: Running, mesh: Mesh) -> None:
    seen: list[str] = []
    states: list[TaskState] = []
    async with a2a_client(gateway) as (_card, client):
        with anyio.fail_after(30):
            async for task, update in client.send_message(  # type: ignore[misc]
                message("steps", {"count": 2, "hold": True})
            ):
                states.append(task.status.state)
                if isinstance(update, TaskStatusUpdateEvent) and update.status.message:
                    data = status_data(task)
                    if data["state"] == "progress":
                        seen.append(data["data"]["step"])
                        if len(seen) == 2:
                            mesh.steps.released.set()
    assert seen == [1, 2]
    assert states[0] == TaskState.submitted
    assert TaskState.working in states
    assert states[-1] == TaskState.completed
    assert data_of(task) == {"done": 2}


async def test_an_agents_error_fails_the_task_and_an_unknown_skill_is_rejected(
    gateway: Running,
) -> None:
    async with a2a_client(gateway, streaming=False) as (_card, client):
        failed = await final_task(client, message("refuse", text="please"))
        rejected = await final_task(client, message("echo", {"x": 1}))
    assert failed.status.state == TaskState.failed
    assert status_data(failed) == {
        "error": {"code": 418, "type": "teapot", "message": "the answer is no"}
    }
    assert rejected.status.state == TaskState.rejected


async def test_tasks_cancel_reaches_the_agent(gateway: Running, mesh: Mesh) -> None:
    async with a2a_client(gateway) as (_card, client):
        with anyio.fail_after(30):
            async for task, update in client.send_message(  # type: ignore[misc]
                message("steps", {"count": 1, "hold": True})
            ):
                if isinstance(update, TaskStatusUpdateEvent) and update.status.message:
                    if status_data(task).get("state") == "progress":
                        break
            cancelled = await client.cancel_task(TaskIdParams(id=task.id))
            await mesh.steps.cancelled.wait()
            stored = await client.get_task(TaskQueryParams(id=task.id))
    assert cancelled.status.state == TaskState.canceled
    assert stored.status.state == TaskState.canceled
    assert not mesh.steps.released.is_set()


async def test_a2a_requests_without_the_token_are_refused(gateway: Running) -> None:
    request = {"jsonrpc": "2.0", "id": 1, "method": "tasks/get", "params": {"id": "x"}}
    async with httpx.AsyncClient(timeout=10) as http:
        rpc = await http.post(f"{gateway.url}/a2a", json=request)
        card = await http.get(f"{gateway.url}/.well-known/agent-card.json")
    assert (rpc.status_code, card.status_code) == (401, 401)
