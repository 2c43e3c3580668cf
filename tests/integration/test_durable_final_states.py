"""Every durable task reaches a final state with a clear error (issue 15.6), on a
real nats-server: a record that is not a record, a dead letter too large to
publish whole, a submission too large with its headers, a deadline already past.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import anyio
import pytest
from nats.aio.client import Client

from actors import AgentHost, EchoAgent
from actors._durable_worker import ATTEMPTS, PAYLOAD_OMITTED
from bus import AgentError, AgentMessage, PayloadTooLarge, TaskError, UnknownTask, new_task_id
from bus.codec import DEADLINE, ERROR_CODE, TASK_ID
from bus.durable import (
    MSG_ID,
    CorruptRecord,
    DurableNames,
    DurableSettings,
    DurableTaskClient,
    TaskState,
)
from orchestrator import Orchestrator

pytestmark = pytest.mark.anyio

FAST = DurableSettings(storage="memory", ack_wait=2, retry_delay=0.05, max_deliver=2)
LONG_ERROR = "failed on purpose " * 20
"""360 characters: with it, the dead-letter headers outgrow the submission's."""


class CountingEcho(EchoAgent):
    """An echo that counts how often it ran each task."""

    def __init__(self, agent_id: str, **kwargs: Any) -> None:
        super().__init__(agent_id, **kwargs)
        self.calls: Counter[str] = Counter()

    async def handle(self, task: AgentMessage) -> Any:
        self.calls[task.task_id] += 1
        return await super().handle(task)


class AlwaysFails(CountingEcho):
    """Fails every attempt with a retryable 500 and a long message."""

    async def handle(self, task: AgentMessage) -> Any:
        self.calls[task.task_id] += 1
        raise TaskError(LONG_ERROR, code=500)


async def test_a_garbage_record_of_a_queued_task_dead_letters_it_unrun(
    nc: Client, prefix: str
) -> None:
    names = DurableNames(prefix)
    client = DurableTaskClient(nc, prefix=prefix, settings=FAST)
    queued = await client.submit("echo", {"n": 1})
    key = names.record_key("echo", queued.task_id)
    await nc.jetstream().publish(names.key_subject(key), b"\xffnot a record")
    with pytest.raises(CorruptRecord, match="is not a task record"):
        await client.record(queued.task_id)  # readers say so, they do not crash

    dead = await nc.subscribe(names.dead("echo"))
    agent = CountingEcho("e-1")
    async with AgentHost(nc, [agent], prefix=prefix, durable=FAST):
        letter = await dead.next_msg(timeout=10)
        with pytest.raises(AgentError, match="is not a task record") as caught:
            await client.result(queued.task_id, timeout=10)
    assert agent.calls[queued.task_id] == 0
    assert letter.headers is not None and letter.headers[TASK_ID] == queued.task_id
    assert letter.data == b'{"n":1}'  # kept for whoever resubmits it
    record = await client.record(queued.task_id)
    assert record.state == TaskState.DEAD_LETTERED
    assert record.error is not None and record.error.type == "corrupt_record"
    assert caught.value.code == 500


async def test_a_dead_letter_too_large_to_publish_whole_goes_without_its_payload(
    nc: Client, prefix: str
) -> None:
    names = DurableNames(prefix)
    dead = await nc.subscribe(names.dead("echo"))
    payload = {"x": "a" * (nc.max_payload - 250)}  # fits with the submission's headers
    agent = AlwaysFails("f-1")
    orch = Orchestrator(nc, prefix=prefix, durable_settings=FAST)
    task_id = new_task_id()
    async with AgentHost(nc, [agent], prefix=prefix, durable=FAST) as host:
        with pytest.raises(AgentError, match="dead-lettered after 2 attempt") as caught:
            await orch.dispatch("echo", payload, durable=True, task_id=task_id, timeout=20)
        letter = await dead.next_msg(timeout=10)
        assert host.nc.is_connected  # the server did not cut the agent's connection
    assert agent.calls[task_id] == FAST.max_deliver
    assert caught.value.code == 500
    assert "left out of the dead letter" in caught.value.message
    assert letter.data == b""
    assert letter.headers is not None
    size = len(b'{"x":""}') + len(payload["x"])
    assert letter.headers[PAYLOAD_OMITTED] == str(size)
    assert (letter.headers[TASK_ID], letter.headers[ERROR_CODE]) == (task_id, "500")
    assert letter.headers[ATTEMPTS] == "2"
    record = await orch.task_record(task_id)
    assert record.state == TaskState.DEAD_LETTERED


async def test_a_submission_over_max_payload_with_its_headers_fails_at_once(
    nc: Client, prefix: str
) -> None:
    client = DurableTaskClient(nc, prefix=prefix, settings=FAST)
    await client.ensure_ready()
    payload = {"x": "a" * (nc.max_payload - 20)}  # the body alone fits
    task_id = new_task_id()
    with anyio.fail_after(5), pytest.raises(PayloadTooLarge, match="with its headers"):
        await client.submit("echo", payload, task_id=task_id)
    assert nc.is_connected
    with pytest.raises(UnknownTask):
        await client.record(task_id)  # nothing was stored
    assert (await client.submit("echo", {"small": True})).state == TaskState.SUBMITTED


async def test_a_task_past_its_deadline_fails_at_once_unrun(nc: Client, prefix: str) -> None:
    names = DurableNames(prefix)
    client = DurableTaskClient(nc, prefix=prefix, settings=FAST)
    await client.ensure_ready()
    dead = await nc.subscribe(names.dead("echo"))
    task_id = new_task_id()
    past = int(time.time() * 1000) - 1000
    headers = {TASK_ID: task_id, MSG_ID: task_id, DEADLINE: str(past)}
    await nc.jetstream().publish(names.job("echo"), b'{"n": 1}', headers=headers)
    agent = CountingEcho("e-1")
    async with AgentHost(nc, [agent], prefix=prefix, durable=FAST):
        with pytest.raises(AgentError) as caught:
            await client.result(f"echo.{task_id}", timeout=10)  # no record yet: name its key
    assert caught.value.code == 408
    assert "deadline" in caught.value.message and "not run" in caught.value.message
    assert agent.calls[task_id] == 0
    record = await client.record(task_id)
    assert (record.state, record.attempts) == (TaskState.FAILED, 0)
    with pytest.raises(TimeoutError):
        await dead.next_msg(timeout=0.5)  # failed, not dead-lettered
