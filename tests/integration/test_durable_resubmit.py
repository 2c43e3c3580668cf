"""A durable task resubmitted with the same ID runs once for as long as its
record lives, past the server's duplicate window too (issue 15.7).

The window is a setting (``duplicate_window``), made short here: each test waits
until the server stores a copy of the job instead of dropping it, then checks
that the task's record, not the window, keeps it from running twice.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from actors import AgentHost, EchoAgent
from bus import AgentMessage, new_task_id
from bus.codec import TASK_ID
from bus.durable import MSG_ID, DurableNames, DurableSettings, DurableTaskClient, TaskState

pytestmark = pytest.mark.anyio

WINDOW = 0.2
SHORT_WINDOW = DurableSettings(
    storage="memory", ack_wait=2, retry_delay=0.05, max_deliver=3, duplicate_window=WINDOW
)
POLL = 0.05
"""Seconds between two looks at the stream while the window runs out."""


class CountingEcho(EchoAgent):
    """An echo that counts how often it ran each task."""

    def __init__(self, agent_id: str, **kwargs: Any) -> None:
        super().__init__(agent_id, **kwargs)
        self.calls: Counter[str] = Counter()

    async def handle(self, task: AgentMessage) -> Any:
        self.calls[task.task_id] += 1
        return await super().handle(task)


async def stored_jobs(js: JetStreamContext, names: DurableNames) -> int:
    return (await js.stream_info(names.tasks_stream)).state.messages


async def settled(js: JetStreamContext, names: DurableNames) -> None:
    """Wait until the echo consumer has nothing pending or unacknowledged."""
    with anyio.fail_after(10):
        while True:
            info = await js.consumer_info(names.tasks_stream, names.consumer("echo"))
            if info.num_pending == 0 and info.num_ack_pending == 0:
                return
            await anyio.sleep(POLL)  # the server has no event for "all acknowledged"


async def test_a_queued_task_resubmitted_past_the_window_runs_once_with_its_first_payload(
    nc: Client, prefix: str
) -> None:
    names = DurableNames(prefix)
    js = nc.jetstream()
    client = DurableTaskClient(nc, prefix=prefix, settings=SHORT_WINDOW)
    task_id = new_task_id()
    await client.submit("echo", {"n": 1, "delay_ms": 300}, task_id=task_id)
    # no agent yet: resubmit until the server stores the second copy (the window ran out)
    with anyio.fail_after(10):
        while await stored_jobs(js, names) < 2:
            again = await client.submit("echo", {"n": 2, "delay_ms": 300}, task_id=task_id)
            assert again.state == TaskState.SUBMITTED
            await anyio.sleep(POLL)
    agent = CountingEcho("e-1", max_concurrency=4)  # takes both copies at once
    async with AgentHost(nc, [agent], prefix=prefix, durable=SHORT_WINDOW) as host:
        result = await client.result(task_id, timeout=10)
        await settled(js, names)
        worker = host.durable_workers["e-1"]
        # the copy is acknowledged unrun: as a duplicate if it is taken while the first
        # runs, as done if it is taken after (a loaded machine)
        unrun = worker.duplicates + worker.skipped
    assert result == {"n": 1, "delay_ms": 300}
    assert agent.calls[task_id] == 1
    assert unrun == 1
    record = await client.record(task_id)
    assert (record.state, record.attempts) == (TaskState.COMPLETED, 1)


async def test_a_running_task_is_not_run_again_by_a_copy_past_the_window(
    nc: Client, prefix: str
) -> None:
    names = DurableNames(prefix)
    js = nc.jetstream()
    client = DurableTaskClient(nc, prefix=prefix, settings=SHORT_WINDOW)
    started = await nc.subscribe(f"{prefix}.status.e-1.started")
    task_id = new_task_id()
    agent = CountingEcho("e-1", max_concurrency=4)
    async with AgentHost(nc, [agent], prefix=prefix, durable=SHORT_WINDOW) as host:
        await client.submit("echo", {"n": 1, "delay_ms": 1500}, task_id=task_id)
        await started.next_msg(timeout=10)
        # the submitter publishes nothing for a task an agent has taken ...
        before = await stored_jobs(js, names)
        again = await client.submit("echo", {"n": 2}, task_id=task_id)
        assert (again.state, await stored_jobs(js, names)) == (TaskState.WORKING, before)
        # ... and a copy that reaches the stream anyway is dropped unrun
        copy = {TASK_ID: task_id, MSG_ID: task_id}
        with anyio.fail_after(10):
            while True:
                ack = await js.publish(names.job("echo"), b'{"n": 3}', headers=copy)
                if not ack.duplicate:
                    break
                await anyio.sleep(POLL)  # the window runs out: no event says when
        result = await client.result(task_id, timeout=10)
        await settled(js, names)
        worker = host.durable_workers["e-1"]
        unrun = worker.duplicates + worker.skipped  # as above: taken while running, or after
    assert result == {"n": 1, "delay_ms": 1500}
    assert agent.calls[task_id] == 1
    assert unrun == 1


async def test_the_duplicate_window_is_a_setting_of_the_stream(nc: Client, prefix: str) -> None:
    names = DurableNames(prefix)
    await DurableTaskClient(nc, prefix=prefix, settings=SHORT_WINDOW).ensure_ready()
    info = await nc.jetstream().stream_info(names.tasks_stream)
    assert info.config.duplicate_window == WINDOW
