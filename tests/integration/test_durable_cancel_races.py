"""Cancels of durable tasks racing with the agents that take and run them, on a
real nats-server with JetStream.

What the caller is told must hold: a task its cancel reported ``cancelled`` never
reaches a handler afterwards, and a cancel stored while the task runs ends it
``cancelled`` even when no broadcast stops it.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import anyio
import pytest
from nats.aio.client import Client

from actors import AgentHost, EchoAgent
from bus import AgentMessage, TaskCancelled, TaskError, new_task_id
from bus.durable import (
    CancelRequest,
    DurableNames,
    DurableSettings,
    DurableTaskClient,
    TaskRecord,
    TaskState,
    decode_record,
)

pytestmark = pytest.mark.anyio

FAST = DurableSettings(storage="memory", ack_wait=5, retry_delay=0.05, history=32)
TASKS = 24


class CountingEcho(EchoAgent):
    """An echo that counts the tasks its handler is given, and when they start."""

    def __init__(self, agent_id: str, **kwargs: Any) -> None:
        super().__init__(agent_id, **kwargs)
        self.calls: Counter[str] = Counter()
        self.started = anyio.Event()

    async def handle(self, task: AgentMessage) -> Any:
        self.calls[task.task_id] += 1
        self.started.set()
        return await super().handle(task)


async def test_a_cancel_stored_while_the_task_runs_ends_it_cancelled_without_a_broadcast(
    nc: Client, prefix: str
) -> None:
    """The broadcast can come before the runner knows the task (and is then lost):
    the request the caller stored first is read again before the result is."""
    client = DurableTaskClient(nc, prefix=prefix, settings=FAST)
    echo = CountingEcho("e-1")
    task_id = new_task_id()
    async with AgentHost(nc, [echo], prefix=prefix, durable=FAST):
        await client.submit("echo", {"delay_ms": 300}, task_id=task_id)
        with anyio.fail_after(10):
            await echo.started.wait()
        token = await client.cancel_token("echo", task_id)
        assert token is not None
        request = CancelRequest(task_id=task_id, token=token, requested_at=time.time())
        await client.store.request_cancel("echo", request)  # the request, no broadcast
        with pytest.raises(TaskCancelled, match="while it ran"):
            await client.result(task_id, timeout=10)
    assert echo.calls[task_id] == 1
    assert [r.state for r in await client.history(task_id)] == [
        "submitted",
        "working",
        "cancelled",
    ]


async def test_a_task_reported_cancelled_never_reaches_a_handler(nc: Client, prefix: str) -> None:
    """Cancels sent while an agent starts and takes the queued tasks: each cancel's
    answer is checked against what the agent did."""
    client = DurableTaskClient(nc, prefix=prefix, settings=FAST)
    ids = [new_task_id() for _ in range(TASKS)]
    for n, task_id in enumerate(ids):
        await client.submit("echo", {"n": n, "delay_ms": 20}, task_id=task_id)
    answers: dict[str, TaskRecord] = {}
    echo = CountingEcho("e-1", max_concurrency=4)

    async def cancel(task_id: str) -> None:
        answers[task_id] = await client.cancel(task_id, capability="echo")

    async with AgentHost(nc, [echo], prefix=prefix, durable=FAST):
        with anyio.fail_after(30):
            await echo.started.wait()  # the agent is taking tasks now
            async with anyio.create_task_group() as tg:
                for task_id in ids:
                    tg.start_soon(cancel, task_id)
            finals = {task_id: await client.wait(task_id, 20, capability="echo") for task_id in ids}
    said = Counter(answer.state for answer in answers.values())
    queued = 0
    for task_id in ids:
        answer, final = answers[task_id].state, finals[task_id].state
        if answer == TaskState.CANCELLED:
            assert final == TaskState.CANCELLED, task_id
            told = answers[task_id].error
            if told is not None and "before an agent ran it" in told.message:
                # the caller read no agent's record: none ran it, then or later
                assert echo.calls[task_id] == 0, task_id
                queued += 1
        elif answer == TaskState.COMPLETED:
            assert final == TaskState.COMPLETED, task_id
        else:  # working: it ends cancelled (the broadcast, or the check after it ran)
            assert answer == TaskState.WORKING, answers[task_id]
            assert final in (TaskState.CANCELLED, TaskState.COMPLETED), final
    assert queued > 0, said  # some were still queued when cancelled
    assert all(count <= 1 for count in echo.calls.values()), echo.calls
    # the agent wrote every record: a reader's "cancelled" was never its own guess
    for task_id in ids:
        names = DurableNames(prefix)
        entry = await client.store.kv.get(names.record_key("echo", task_id))
        assert entry.value is not None
        assert decode_record(entry.value).state == finals[task_id].state


class FailingOnce(CountingEcho):
    """Fails its first attempt of each task with a 500 (retried later)."""

    async def handle(self, task: AgentMessage) -> Any:
        self.calls[task.task_id] += 1
        if self.calls[task.task_id] == 1:
            raise TaskError("first attempt fails on purpose", code=500)
        return task.payload


async def test_a_task_waiting_for_its_retry_is_cancelled_for_good(nc: Client, prefix: str) -> None:
    """Between two attempts the task is back in the queue, and no agent holds it:
    a cancel then must keep the retry from running."""
    slow_retry = DurableSettings(storage="memory", ack_wait=5, retry_delay=2.0)
    client = DurableTaskClient(nc, prefix=prefix, settings=slow_retry)
    names = DurableNames(prefix)
    task_id = new_task_id()
    flaky = FailingOnce("e-1")
    written = await nc.subscribe(names.key_subject(names.record_key("echo", task_id)))
    async with AgentHost(nc, [flaky], prefix=prefix, durable=slow_retry):
        await client.submit("echo", {"n": 1}, task_id=task_id)
        with anyio.fail_after(10):
            while True:  # working, then submitted again with the first attempt's error
                record = decode_record((await written.next_msg(10)).data)
                if record.state == TaskState.SUBMITTED:
                    break
        answer = await client.cancel(task_id)
        assert answer.state == TaskState.CANCELLED, answer
        with pytest.raises(TaskCancelled):
            await client.result(task_id, timeout=10)
        with anyio.fail_after(10):
            while record.state != TaskState.CANCELLED:  # the agent's, on the redelivery
                record = decode_record((await written.next_msg(10)).data)
    assert flaky.calls[task_id] == 1
    assert record.error is not None and "not run" in record.error.message
    assert record.attempts == 2
