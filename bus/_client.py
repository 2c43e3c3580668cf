"""The task client: the one request-reply path of callboard.

The orchestrator's ``dispatch`` and an agent's delegation both go through
``TaskClient.request``, so deadlines, chains and error translation behave the
same everywhere. It lives in ``bus`` so that agents can delegate without
depending on the orchestrator.

A request's header block is framed from the one table of task headers
(``bus.wire.task_header_block``; a plain task's from the client's template of
it, ``PlainTaskHeaders``) and sent through the connection's ``Inbox``
(``_inbox``): the same ``HPUB`` nats-py would send, for a fraction of
``Client.request``'s cost.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
import nats.errors
from nats.aio.client import Client

from ._cancel_token import CANCEL_TOKEN, CancelKeys
from ._codec import TASK_ID, decode_reply, encode_json, error_from_reply
from ._errors import ConnectionFailed, NoAgentError, PayloadTooLarge, TaskTimeout, UsageError
from ._ids import new_task_id
from ._inbox import inbox_for
from ._messages import AgentMessage, MessageType
from ._subjects import DEFAULT_PREFIX, Subjects
from ._wire import PlainTaskHeaders, header_block, task_header_block

__all__ = ["DEFAULT_TIMEOUT", "TaskClient"]

log = logging.getLogger("callboard.client")

DEFAULT_TIMEOUT = 30.0
"""Seconds a task may take when the caller does not say."""
_MAX_CACHED_SUBJECTS = 1024
_MAX_TIMEOUT = 1e9
"""Seconds (about 31 years): a timeout must be a number below it (not NaN nor infinite)."""


class TaskClient:
    """Sends tasks over NATS request-reply and turns replies into results or typed errors.

    Args:
        nc: a connected nats-py client.
        prefix: the subject prefix of the callboard system.
        sender: the name put in ``Agent-Sender``.
        default_timeout: seconds a task may take when a call does not say.
    """

    def __init__(
        self,
        nc: Client,
        *,
        prefix: str = DEFAULT_PREFIX,
        sender: str = "orchestrator",
        default_timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.nc = nc
        self.subjects = Subjects(prefix)
        self.sender = sender
        self.default_timeout = default_timeout
        self._inbox = inbox_for(nc)
        self._task_subjects: dict[str, str] = {}
        self._plain_headers = PlainTaskHeaders(sender)
        self.cancel_keys = CancelKeys()  # security: only this client can cancel its tasks

    async def request(
        self,
        capability: str,
        payload: Any,
        *,
        timeout: float | None = None,
        task_id: str | None = None,
        seq: int | None = None,
        chain: tuple[str, ...] = (),
        deadline_ms: int | None = None,
        traceparent: str | None = None,
        agent_id: str | None = None,
    ) -> AgentMessage:
        """Send one task and wait for its reply.

        Args:
            capability: the capability to send it to.
            payload: any JSON value.
            timeout: seconds to wait; the default timeout when None.
            task_id: reuse an ID (a retry); a new one when None.
            seq: position in a pipeline.
            chain: agents the task passed through (delegation).
            deadline_ms: an outer deadline (unix ms) the task may not outlive.
            traceparent: W3C trace context to pass on.
            agent_id: send to this agent instance directly instead of any replica.

        Returns:
            The RESULT message: ``payload`` is the result, ``sender`` the agent id.

        Raises:
            NoAgentError: nobody serves the capability.
            TaskTimeout: no reply before the deadline.
            AgentError: the agent replied with an error (a subclass by code).
            BadInput: the payload is not JSON-serialisable.
            UsageError: the timeout is NaN, infinite or beyond 1e9 seconds.
        """
        if not task_id:
            task_id = new_task_id()
        budget = self.default_timeout if timeout is None else timeout
        if not -_MAX_TIMEOUT < budget < _MAX_TIMEOUT:  # NaN and infinities too
            raise UsageError(f"a task's timeout is a number of seconds, not {budget!r}")
        start = time.time_ns() // 1_000_000
        deadline = start + int(budget * 1000)
        if deadline_ms is not None and deadline_ms < deadline:
            deadline = deadline_ms
        remaining = (deadline - start) / 1000.0
        if remaining <= 0:
            raise TaskTimeout(
                f"task {task_id} for {capability!r} has no time left before its deadline",
                task_id=task_id,
                capability=capability,
            )
        body = encode_json(payload)
        if agent_id is None:
            subject = self._task_subjects.get(capability)
            if subject is None:
                subject = self.subjects.task(capability)
                if len(self._task_subjects) < _MAX_CACHED_SUBJECTS:
                    self._task_subjects[capability] = subject
        else:  # security: the capability is in the subject, bound by the server
            subject = self.subjects.agent_task(capability, agent_id)
        cancel_hash = self.cancel_keys.hash_of(task_id)  # security: caller-only cancel
        if seq is None and not chain and not traceparent:
            plain = self._plain_headers
            if plain.sender is not self.sender:  # the sender was changed
                plain = self._plain_headers = PlainTaskHeaders(self.sender)
            block = plain.block(task_id, deadline, cancel_hash)
        else:
            block = task_header_block(
                task_id=task_id,
                sender=self.sender,
                deadline_ms=deadline,
                chain=chain,
                seq=seq,
                traceparent=traceparent,
                cancel_hash=cancel_hash,
            )
        try:
            msg = await self._inbox.request(subject, block, body, remaining)
        except anyio.get_cancelled_exc_class():
            self._cancel_nowait(task_id, "the caller cancelled the task")
            raise
        except nats.errors.NoRespondersError:
            if agent_id is None:
                missing = f"no agent serves capability {capability!r}"
                check = "the subject prefix"
            else:
                missing = f"no agent has the id {agent_id!r}"
                check = "the id ('callboard agents' lists them) and the subject prefix"
            raise NoAgentError(
                f"{missing} now (nobody listens on {subject}: none runs, or its connection "
                f"to NATS is down or reconnecting); start one with 'callboard run "
                f"CONFIG.toml', or check {check}",
                task_id=task_id,
                capability=capability,
            ) from None
        except nats.errors.TimeoutError:
            await self.cancel(task_id, f"the caller gave up after {remaining:.3g}s")
            raise TaskTimeout(
                f"task {task_id} for {capability!r} got no reply within {remaining:.3g}s",
                task_id=task_id,
                capability=capability,
            ) from None
        except nats.errors.MaxPayloadError as exc:
            raise PayloadTooLarge(
                f"the payload of task {task_id} ({len(body)} bytes) is above the NATS "
                f"server's max_payload: send a smaller payload or a reference to the data"
            ) from exc
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError) as exc:
            raise ConnectionFailed(
                f"cannot send task {task_id}: the NATS connection is {exc}"
            ) from exc
        except nats.errors.OutboundBufferLimitError as exc:
            # while reconnecting, nats-py buffers what is published (2 MB by default)
            raise ConnectionFailed(
                f"cannot send task {task_id}: the NATS connection is down and its "
                "reconnect buffer is full; retry once it has reconnected"
            ) from exc
        reply = decode_reply(msg.headers, msg.data, task_id=task_id, capability=capability)
        if agent_id is not None and reply.sender != agent_id:  # security: the bound id
            reply.sender = agent_id
        if reply.type is MessageType.ERROR:
            raise error_from_reply(reply)
        return reply

    async def cancel(self, task_id: str, reason: str = "cancelled by the caller") -> None:
        """Tell whichever agent runs ``task_id`` to stop it (and what it delegated).

        Best effort: a lost connection only means the agent runs on until its
        deadline, which the task carries anyway.
        """
        self._cancel_nowait(task_id, reason)

    def _cancel_nowait(self, task_id: str, reason: str) -> None:
        """``cancel`` without waiting, so that a cancelled caller can still send it."""
        wire = self._inbox.wire
        try:
            token = self.cancel_keys.token(task_id)  # security: caller-only cancel
            headers = header_block({TASK_ID: task_id, CANCEL_TOKEN: token})
            wire.write_nowait(wire.hpub(self.subjects.cancel(), "", headers, reason.encode()))
        except Exception as exc:
            log.debug("could not publish the cancel of task %s: %s", task_id, exc)
