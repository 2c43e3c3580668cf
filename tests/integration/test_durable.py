"""Durable dispatch on a real nats-server with JetStream: the record of a task,
waiting in the stream, retries, dead letters, idempotency, cancel, draining.

Faults with real processes (kill -9, server restarts) are in
``tests/system/test_durable_faults.py``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import msgspec
import pytest
from nats.aio.client import Client

from actors import AgentHost, EchoAgent, MathAgent
from actors._durable_worker import ATTEMPTS
from bus import (
    AgentError,
    AgentMessage,
    BadInput,
    TaskCancelled,
    TaskError,
    TaskStillPending,
    UnknownTask,
    new_task_id,
)
from bus.codec import ERROR_CODE, TASK_ID
from bus.durable import (
    MSG_ID,
    DurableNames,
    DurableSettings,
    DurableTaskClient,
    TaskState,
    TaskStore,
    ensure_durable,
    replay_status,
)
from orchestrator import Orchestrator

pytestmark = pytest.mark.anyio

FAST = DurableSettings(storage="memory", ack_wait=2, retry_delay=0.05, max_deliver=3, history=32)


class FlakyAgent(EchoAgent):
    """Fails with a 500 until it has been called ``failures`` times per task."""

    kind = "flaky"

    def __init__(self, agent_id: str, *, failures: int, **kwargs: Any) -> None:
        super().__init__(agent_id, **kwargs)
        self.failures = failures
        self.calls: Counter[str] = Counter()

    async def handle(self, task: AgentMessage) -> Any:
        self.calls[task.task_id] += 1
        if self.calls[task.task_id] <= self.failures:
            raise TaskError(f"attempt {self.calls[task.task_id]} failed on purpose", code=500)
        return {"attempt": self.calls[task.task_id]}


class CountingEcho(EchoAgent):
    """An echo that counts how often it ran each task."""

    def __init__(self, agent_id: str, **kwargs: Any) -> None:
        super().__init__(agent_id, **kwargs)
        self.calls: Counter[str] = Counter()

    async def handle(self, task: AgentMessage) -> Any:
        self.calls[task.task_id] += 1
        return await super().handle(task)


async def states(store: TaskStore, task_id: str, capability: str = "echo") -> list[str]:
    return [str(s.record.state) for s in await store.history(capability, task_id)]


async def test_a_durable_task_returns_its_result_and_keeps_its_record(
    nc: Client, prefix: str
) -> None:
    orch = Orchestrator(nc, prefix=prefix, durable_settings=FAST)
    async with AgentHost(nc, [MathAgent("m-1")], prefix=prefix, durable=FAST):
        task_id = new_task_id()
        result = await orch.dispatch(
            "math", {"expression": "6*7"}, durable=True, task_id=task_id, timeout=10
        )
        assert result == {"value": 42}
        record = await orch.task_record(task_id)
        assert record.state == TaskState.COMPLETED
        assert (record.attempts, record.agent, record.capability) == (1, "m-1", "math")
        assert await orch.result(task_id) == {"value": 42}  # later, by ID
        store = orch.durable.client.store
        assert await states(store, task_id, "math") == ["submitted", "working", "completed"]


async def test_a_task_waits_in_the_stream_until_an_agent_starts(nc: Client, prefix: str) -> None:
    client = DurableTaskClient(nc, prefix=prefix, settings=FAST)
    record = await client.submit("echo", {"n": 1})
    with pytest.raises(TaskStillPending) as caught:
        await client.result(record.task_id, timeout=0.2)
    assert caught.value.state == "submitted"
    assert "not lost" in caught.value.message
    async with AgentHost(nc, [EchoAgent("e-1")], prefix=prefix, durable=FAST):
        assert await client.result(record.task_id, timeout=10) == {"n": 1}


async def test_bad_input_fails_at_once_and_is_not_retried(nc: Client, prefix: str) -> None:
    orch = Orchestrator(nc, prefix=prefix, durable_settings=FAST)
    async with AgentHost(nc, [MathAgent("m-1")], prefix=prefix, durable=FAST):
        with pytest.raises(AgentError) as caught:
            await orch.dispatch("math", {"expression": "1/0"}, durable=True, timeout=10)
    assert caught.value.code == 400
    record = await orch.task_record(caught.value.task_id or "")
    assert (record.state, record.attempts) == (TaskState.FAILED, 1)
    assert record.error is not None and "division by zero" in record.error.message


async def test_a_task_that_always_fails_is_dead_lettered_with_its_error(
    nc: Client, prefix: str
) -> None:
    names = DurableNames(prefix)
    dead = await nc.subscribe(names.dead("echo"))
    agent = FlakyAgent("f-1", failures=1000)
    orch = Orchestrator(nc, prefix=prefix, durable_settings=FAST)
    task_id = new_task_id()
    async with AgentHost(nc, [agent], prefix=prefix, durable=FAST):
        with pytest.raises(AgentError) as caught:
            await orch.dispatch("echo", {"x": 1}, durable=True, task_id=task_id, timeout=20)
        letter = await dead.next_msg(timeout=10)
    assert caught.value.code == 500
    assert "dead-lettered after 3 attempt(s)" in caught.value.message
    assert agent.calls[task_id] == FAST.max_deliver
    record = await orch.task_record(task_id)
    assert (record.state, record.attempts) == (TaskState.DEAD_LETTERED, 3)
    assert record.error is not None and "attempt 3 failed on purpose" in record.error.message
    assert msgspec.json.decode(letter.data) == {"x": 1}
    assert letter.headers is not None
    assert letter.headers[TASK_ID] == task_id
    assert letter.headers[ERROR_CODE] == "500"
    assert letter.headers[ATTEMPTS] == "3"
    kept = await nc.jetstream().stream_info(names.dead_stream)
    assert kept.state.messages == 1  # the dead letter is itself durable


async def test_a_transient_failure_is_retried_until_it_passes(nc: Client, prefix: str) -> None:
    agent = FlakyAgent("f-1", failures=2)
    orch = Orchestrator(nc, prefix=prefix, durable_settings=FAST)
    async with AgentHost(nc, [agent], prefix=prefix, durable=FAST):
        task_id = new_task_id()
        result = await orch.dispatch("echo", {}, durable=True, task_id=task_id, timeout=20)
    assert result == {"attempt": 3}
    record = await orch.task_record(task_id)
    assert (record.state, record.attempts, record.error) == (TaskState.COMPLETED, 3, None)
    assert await states(orch.durable.client.store, task_id) == [
        "submitted",
        "working",
        "submitted",
        "working",
        "submitted",
        "working",
        "completed",
    ]


async def test_resubmitting_an_id_runs_the_task_once(nc: Client, prefix: str) -> None:
    agent = CountingEcho("e-1")
    orch = Orchestrator(nc, prefix=prefix, durable_settings=FAST)
    task_id = new_task_id()
    async with AgentHost(nc, [agent], prefix=prefix, durable=FAST):
        first = await orch.dispatch("echo", {"n": 1}, durable=True, task_id=task_id, timeout=10)
        again = await orch.dispatch("echo", {"n": 2}, durable=True, task_id=task_id, timeout=10)
    assert first == again == {"n": 1}
    assert agent.calls[task_id] == 1


async def test_a_redelivered_task_that_is_done_is_acknowledged_unrun(
    nc: Client, prefix: str
) -> None:
    """The server may deliver a task again (a lost ack, a copy past the duplicate
    window); the record says it is done, so the agent does not run it twice."""
    agent = CountingEcho("e-1")
    names = DurableNames(prefix)
    orch = Orchestrator(nc, prefix=prefix, durable_settings=FAST)
    task_id = new_task_id()
    acks = await nc.subscribe(f"$JS.ACK.{names.tasks_stream}.{names.consumer('echo')}.>")
    async with AgentHost(nc, [agent], prefix=prefix, durable=FAST) as host:
        await orch.dispatch("echo", {"n": 1}, durable=True, task_id=task_id, timeout=10)
        copy = {TASK_ID: task_id, MSG_ID: f"{task_id}-copy"}
        published = await nc.jetstream().publish(names.job("echo"), b'{"n": 1}', headers=copy)
        # the copy's own final ack, known by its stream sequence in the ack subject
        # ($JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>...): the first task's
        # acks, and in-progress acks (+WPI) on a loaded machine, are not it
        with anyio.fail_after(10):
            while True:
                ack = await acks.next_msg(timeout=10)
                if ack.subject.split(".")[5] == str(published.seq) and ack.data != b"+WPI":
                    break
        assert ack.data in (b"", b"+ACK")
        assert host.durable_workers["e-1"].skipped == 1
        # the server applies the ack after we see it: no event says when, so ask again
        # until it has (bounded)
        js = nc.jetstream()
        with anyio.fail_after(5):
            while True:
                info = await js.consumer_info(names.tasks_stream, names.consumer("echo"))
                if info.num_ack_pending == 0:
                    break
                await anyio.sleep(0.02)
    assert agent.calls[task_id] == 1
    assert info.num_ack_pending == 0 and info.num_pending == 0
    assert await states(orch.durable.client.store, task_id) == ["submitted", "working", "completed"]


async def test_a_cancelled_durable_task_ends_cancelled(nc: Client, prefix: str) -> None:
    orch = Orchestrator(nc, prefix=prefix, durable_settings=FAST)
    started = await nc.subscribe(f"{prefix}.status.e-1.started")
    task_id = new_task_id()
    outcome: list[BaseException] = []

    async def run() -> None:
        try:
            await orch.dispatch(
                "echo", {"delay_ms": 30_000}, durable=True, task_id=task_id, timeout=20
            )
        except TaskCancelled as exc:
            outcome.append(exc)

    async with AgentHost(nc, [EchoAgent("e-1")], prefix=prefix, durable=FAST):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await started.next_msg(timeout=10)
            # security: only the caller (the orchestrator's cancel token) may cancel
            await orch.durable.client.cancel(task_id, reason="the user changed their mind")
    assert len(outcome) == 1
    assert "the user changed their mind" in outcome[0].message
    assert (await orch.task_record(task_id)).state == TaskState.CANCELLED


async def test_a_draining_agent_hands_its_task_back_to_the_queue(nc: Client, prefix: str) -> None:
    orch = Orchestrator(nc, prefix=prefix, durable_settings=FAST)
    started = await nc.subscribe(f"{prefix}.status.e-1.started")
    task_id = new_task_id()
    result: list[Any] = []
    done = anyio.Event()

    async def run() -> None:
        result.append(
            await orch.dispatch(
                "echo", {"delay_ms": 1500}, durable=True, task_id=task_id, timeout=30
            )
        )
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        async with AgentHost(nc, [EchoAgent("e-1")], prefix=prefix, durable=FAST, grace_period=0):
            await started.next_msg(timeout=10)
        # e-1 left mid-task: the task went back to the queue; e-2 finishes it
        async with AgentHost(nc, [EchoAgent("e-2")], prefix=prefix, durable=FAST):
            with anyio.fail_after(20):
                await done.wait()
    assert result == [{"delay_ms": 1500}]
    record = await orch.task_record(task_id)
    assert (record.state, record.agent, record.attempts) == (TaskState.COMPLETED, "e-2", 2)


async def test_a_durable_pipeline_passes_results_between_steps(nc: Client, prefix: str) -> None:
    orch = Orchestrator(nc, prefix=prefix, durable_settings=FAST)
    async with AgentHost(nc, [MathAgent("m-1"), EchoAgent("e-1")], prefix=prefix, durable=FAST):
        results = await orch.run_pipeline(
            [
                {"capability": "math", "payload": {"expression": "2+3"}},
                {"capability": "echo", "payload": {"got": "$prev"}},
            ],
            durable=True,
            timeout=10,
        )
    assert [r.result for r in results] == [{"value": 5}, {"got": {"value": 5}}]
    for step in results:
        assert (await orch.task_record(step.task_id or "")).state == TaskState.COMPLETED


async def test_the_status_stream_keeps_a_tasks_events_for_replay(nc: Client, prefix: str) -> None:
    orch = Orchestrator(nc, prefix=prefix, durable_settings=FAST)
    names = DurableNames(prefix)
    task_id = new_task_id()
    async with AgentHost(nc, [EchoAgent("e-1")], prefix=prefix, durable=FAST):
        await orch.dispatch("echo", {}, durable=True, task_id=task_id, timeout=10)
        seen: list[str] = []
        with anyio.fail_after(10):
            while "completed" not in seen:
                seen = []
                async for msg in replay_status(
                    nc.jetstream(), names, names.subjects.all_status(), since=None, follow=False
                ):
                    event = msgspec.json.decode(msg.data)
                    if event.get("task_id") == task_id:
                        seen.append(event["state"])
    assert seen == ["accepted", "started", "completed"]


async def test_ids_that_cannot_be_keys_and_unknown_ids_are_clear_errors(
    nc: Client, prefix: str
) -> None:
    client = DurableTaskClient(nc, prefix=prefix, settings=FAST)
    with pytest.raises(BadInput, match="invalid durable task id"):
        await client.submit("echo", {}, task_id="has.dots")
    with pytest.raises(UnknownTask, match="no durable task never-made"):
        await client.result("never-made")


async def test_start_up_creates_streams_and_updates_consumers_only_setup_changes_streams(
    nc: Client, prefix: str
) -> None:
    names = DurableNames(prefix)
    js = nc.jetstream()
    async with AgentHost(nc, [EchoAgent("e-1")], prefix=prefix, durable=FAST):
        pass
    changed = msgspec.structs.replace(FAST, ack_wait=7, result_ttl=600)
    async with AgentHost(nc, [EchoAgent("e-1", max_concurrency=3)], prefix=prefix, durable=changed):
        consumer = await js.consumer_info(names.tasks_stream, names.consumer("echo"))
        bucket = await js.stream_info(f"KV_{names.bucket}")
    assert consumer.config.ack_wait == 7  # the consumer is the daemon's own
    assert consumer.config.max_ack_pending == 3
    assert consumer.config.max_deliver == changed.max_deliver + 1
    assert bucket.config.max_age == FAST.result_ttl  # a running role never changes a stream
    done = await ensure_durable(js, names, changed, update=True)  # the setup step
    assert f"KV_{names.bucket}: up to date with the settings" in done
    bucket = await js.stream_info(f"KV_{names.bucket}")
    assert bucket.config.max_age == 600
    assert not bucket.config.allow_rollup_hdrs  # no writer may purge a key's history
