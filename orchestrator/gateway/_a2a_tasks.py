"""A2A tasks backed by durable records, for the capabilities the config makes durable.

The A2A task id is the durable task's id, so ``tasks/get`` reads the task's
record in the JetStream bucket: it answers after a gateway restart, and on
any replica of the gateway. The in-memory store still keeps what the SDK
saves during this run (the history, the context id, a rejected message): a
task it holds in a final state is answered from memory; any other is
answered from its record when there is one.

Record state → A2A task state: ``submitted`` → ``submitted``; ``working`` →
``working``; ``completed`` → ``completed`` with the ``result`` artifact;
``failed`` and ``dead-lettered`` → ``failed`` with the error; ``cancelled`` →
``canceled``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from a2a.server.context import ServerCallContext
from a2a.server.tasks import InMemoryTaskStore, TaskStore
from a2a.types import (
    Artifact,
    DataPart,
    Message,
    Part,
    Role,
    Task,
    TaskState,
    TaskStatus,
    TextPart,
)

from bus import BadInput, CallboardError
from bus.durable import DurableTaskClient, TaskRecord, result_of
from bus.durable import TaskState as RecordState

__all__ = ["RECORD_TO_A2A", "DurableBackedTaskStore", "task_of_record"]

log = logging.getLogger("callboard.gateway.a2a")

RECORD_TO_A2A = {
    RecordState.SUBMITTED: TaskState.submitted,
    RecordState.WORKING: TaskState.working,
    RecordState.COMPLETED: TaskState.completed,
    RecordState.FAILED: TaskState.failed,
    RecordState.DEAD_LETTERED: TaskState.failed,
    RecordState.CANCELLED: TaskState.canceled,
}
"""A durable record's state, as an A2A task's."""
FINAL_STATES = frozenset(
    {TaskState.completed, TaskState.failed, TaskState.canceled, TaskState.rejected}
)


def task_of_record(record: TaskRecord, known: Task | None = None) -> Task:
    """The A2A task a durable record stands for (``known``: what memory holds of it)."""
    state = RECORD_TO_A2A[record.state]
    artifacts: list[Artifact] = []
    message: Message | None = None
    if record.state == RecordState.COMPLETED:
        value = result_of(record)
        data = value if isinstance(value, dict) else {"result": value}
        artifacts.append(
            Artifact(artifact_id=f"{record.task_id}-result", name="result", parts=[_data(data)])
        )
    elif record.done:
        try:
            result_of(record)
        except CallboardError as exc:
            error = {"code": exc.code, "type": exc.type, "message": exc.message}
            message = _agent_message(
                record,
                [_text(f"error {exc.code} ({exc.type}): {exc.message}"), _data({"error": error})],
            )
    else:
        message = _agent_message(record, [_text(record.state.value)])
    timestamp = datetime.fromtimestamp(record.updated_at, UTC).isoformat()
    return Task(
        id=record.task_id,
        context_id=known.context_id if known is not None else record.task_id,
        status=TaskStatus(state=state, message=message, timestamp=timestamp),
        artifacts=artifacts or None,
        history=known.history if known is not None else None,
        metadata={
            "skill": record.capability,
            "durable": True,
            "attempts": record.attempts,
            "agent": record.agent,
        },
    )


class DurableBackedTaskStore(TaskStore):
    """The SDK's in-memory store, with the durable records of the durable capabilities.

    Args:
        client: reads the records (the gateway's NATS user may read those of
            its exposed capabilities only).
        capabilities: the durable capabilities a task may belong to; a record
            of any other is never read.
    """

    def __init__(self, client: DurableTaskClient, capabilities: list[str]) -> None:
        self.memory = InMemoryTaskStore()
        self.client = client
        self.capabilities = list(capabilities)

    async def save(self, task: Task, context: ServerCallContext | None = None) -> None:
        await self.memory.save(task, context)

    async def delete(self, task_id: str, context: ServerCallContext | None = None) -> None:
        await self.memory.delete(task_id, context)

    async def get(self, task_id: str, context: ServerCallContext | None = None) -> Task | None:
        """The task from memory when final there, else from its durable record."""
        known = await self.memory.get(task_id, context)
        if known is not None and known.status.state in FINAL_STATES:
            return known
        record = await self._record(task_id, known)
        if record is None:
            return known
        return task_of_record(record, known)

    async def _record(self, task_id: str, known: Task | None) -> TaskRecord | None:
        skill = (known.metadata or {}).get("skill") if known is not None else None
        capabilities = [skill] if skill in self.capabilities else self.capabilities
        for capability in capabilities:
            try:
                record = await self.client.record(task_id, capability=capability)
            except BadInput:
                return None  # not a durable id: no record can have it
            except CallboardError as exc:
                if exc.code != 404:
                    log.warning("reading the record of task %s failed: %s", task_id, exc)
                continue
            except Exception as exc:  # nats-py's own errors: the server is away
                log.warning("reading the record of task %s failed: %s", task_id, exc)
                continue
            return record
        return None


def _agent_message(record: TaskRecord, parts: list[Part]) -> Message:
    return Message(
        role=Role.agent,
        message_id=f"{record.task_id}-{record.state.value}-{record.attempts}",
        task_id=record.task_id,
        parts=parts,
    )


def _text(text: str) -> Part:
    return Part(root=TextPart(text=text))


def _data(data: dict[str, Any]) -> Part:
    return Part(root=DataPart(data=data))
