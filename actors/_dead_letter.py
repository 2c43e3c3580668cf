"""Dead letters: the copy of a durable task that used up its attempts, kept on
``<prefix>.dead.<capability>`` with its last error, for an operator to read or
resubmit.

A copy must never keep its task from a final state: one that would be over the
server's ``max_payload`` with the added headers goes without its payload (and
says so), and one the server will not store is reported to the caller, which
records the task dead-lettered anyway.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anyio
import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from bus import ErrorInfo
from bus.codec import AGENT_ID, ERROR, ERROR_CODE, TASK_ID
from bus.durable import MSG_ID, TRANSIENT, message_size

__all__ = ["ATTEMPTS", "PAYLOAD_OMITTED", "DeadLetter", "publish_dead_letter"]

log = logging.getLogger("callboard.durable")

ATTEMPTS = "Agent-Attempts"
"""On a dead letter: how many times the task was tried."""
PAYLOAD_OMITTED = "Agent-Payload-Omitted"
"""On a dead letter: the payload's size in bytes, when it was left out because the
copy with its headers would not fit under the server's max_payload."""
_ERROR_HEADER_MAX = 1024
"""Characters of the error message a dead letter's header keeps."""


@dataclass(frozen=True)
class DeadLetter:
    """What a dead letter says about its task: ID, last error, attempts, who gave up."""

    task_id: str
    error: ErrorInfo
    attempts: int
    agent_id: str


async def publish_dead_letter(
    js: JetStreamContext,
    subject: str,
    msg: Msg,
    letter: DeadLetter,
    *,
    max_payload: int,
    patience: float,
) -> str:
    """Publish the task's copy on ``subject``, trying again for ``patience`` seconds
    while the server does not answer; return what the copy lacks ("" if it is whole)."""
    error = letter.error
    ours = {
        MSG_ID: f"{letter.task_id}.dead",
        TASK_ID: letter.task_id,
        ERROR: error.message[:_ERROR_HEADER_MAX].replace("\r", " ").replace("\n", " "),
        ERROR_CODE: str(error.code),
        ATTEMPTS: str(letter.attempts),
        AGENT_ID: letter.agent_id,
    }
    headers = {**(msg.headers or {}), **ours}
    body, note = msg.data, ""
    if message_size(headers, body) > max_payload:
        body, note = b"", f"payload of {len(msg.data)} bytes left out of the dead letter"
        headers[PAYLOAD_OMITTED] = str(len(msg.data))
        if message_size(headers, body) > max_payload:
            headers = {**ours, PAYLOAD_OMITTED: str(len(msg.data))}
    delay = 0.1
    with anyio.move_on_after(patience):
        while True:
            try:
                await js.publish(subject, body, headers=headers)
                return note
            except TRANSIENT as exc:
                log.info("publishing the dead letter of %s failed for now: %s", letter.task_id, exc)
            except nats.errors.Error as exc:
                return f"its dead-letter copy was refused: {exc}"
            await anyio.sleep(delay)
            delay = min(delay * 2, 2.0)
    return f"its dead-letter copy could not be stored within {patience:g}s"
