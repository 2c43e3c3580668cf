"""Durable dispatch for the orchestrator: submit to JetStream, wait on the record.

The reply has the shape of a core reply (an ``AgentMessage`` with the result,
the task ID and the agent that ran it), so pipelines, retries and metrics
treat both modes alike.
"""

from __future__ import annotations

from typing import Any

from nats.aio.client import Client

from bus import DEFAULT_PREFIX, DEFAULT_TIMEOUT, AgentMessage, ConfigError, MessageType
from bus.durable import DurableSettings, DurableTaskClient, result_of

__all__ = ["DurableDispatch"]


class DurableDispatch:
    """Sends tasks through the work queue and waits for their outcome.

    Args:
        nc: the connection.
        prefix: the subject prefix of the system.
        sender: who the tasks come from.
        settings: for creating the streams if no daemon has yet.
        default_timeout: seconds to wait for a result when a call does not say.
    """

    def __init__(
        self,
        nc: Client,
        *,
        prefix: str = DEFAULT_PREFIX,
        sender: str = "orchestrator",
        settings: DurableSettings | None = None,
        default_timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.client = DurableTaskClient(nc, prefix=prefix, sender=sender, settings=settings)
        self.default_timeout = default_timeout

    async def request(
        self,
        capability: str,
        payload: Any,
        *,
        timeout: float | None,
        task_id: str,
        seq: int | None,
        agent_id: str | None,
    ) -> AgentMessage:
        """Submit (or find, for a known ID) the task, wait for it, return its result."""
        if agent_id is not None:
            raise ConfigError(
                "a durable task goes to its capability's work queue, not to one agent: "
                "drop agent_id, or send it without durable"
            )
        await self.client.submit(capability, payload, task_id=task_id, seq=seq)
        record = await self.client.wait(
            task_id, self.default_timeout if timeout is None else timeout, capability=capability
        )
        return AgentMessage(
            type=MessageType.RESULT,
            task_id=task_id,
            sender=record.agent,
            capability=capability,
            payload=result_of(record),
            seq=seq,
        )
