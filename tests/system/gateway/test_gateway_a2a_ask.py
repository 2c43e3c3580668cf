"""``ask`` over A2A: a request in plain words runs the orchestrator's
decompose-route-aggregate on the exposed capabilities only, a status update per
step, driven by ``a2a-sdk``'s client against a real gateway process.
"""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import pytest
from a2a.types import (
    DataPart,
    Message,
    Part,
    Role,
    TaskState,
    TaskStatusUpdateEvent,
    TextPart,
)
from gateway_support import Running
from test_gateway_a2a import a2a_client, data_of, final_task, status_data

pytestmark = [pytest.mark.anyio, pytest.mark.system]


def words(text: str, metadata: dict[str, Any] | None = None) -> Message:
    return Message(
        role=Role.user,
        parts=[Part(root=TextPart(text=text))],
        message_id=uuid.uuid4().hex,
        metadata=metadata,
    )


@pytest.mark.parametrize("metadata", [None, {"skill": "ask"}])
async def test_a_request_in_words_runs_its_steps_and_streams_each(
    gateway: Running, metadata: dict[str, Any] | None
) -> None:
    steps: list[tuple[int, str, str]] = []
    async with a2a_client(gateway) as (_card, client):
        with anyio.fail_after(30):
            async for task, update in client.send_message(  # type: ignore[misc]
                words("what is 6*7, then what is 2+3", metadata)
            ):
                if isinstance(update, TaskStatusUpdateEvent) and update.status.message:
                    data = status_data(task)
                    if "step" in data:
                        steps.append((data["step"], data["capability"], data["state"]))
    assert task.status.state == TaskState.completed, task
    assert steps == [
        (1, "math", "dispatched"),
        (1, "math", "completed"),
        (2, "math", "dispatched"),
        (2, "math", "completed"),
    ]
    result = data_of(task)
    assert [step["result"] for step in result["steps"]] == [{"value": 42}, {"value": 5}]
    assert result["answer"]


async def test_ask_never_reaches_a_capability_the_gateway_does_not_expose(
    gateway: Running,
) -> None:
    """echo is live on the bus, but not in the gateway's config."""
    async with a2a_client(gateway, streaming=False) as (_card, client):
        with anyio.fail_after(30):
            task = await final_task(client, words("echo hi", {"skill": "ask"}))
    assert task.status.state == TaskState.failed, task
    assert task.status.message is not None
    [error] = [p.root.data for p in task.status.message.parts if isinstance(p.root, DataPart)]
    assert error["error"]["type"] == "no_route", error
    assert "echo" not in str(task.artifacts or "")
