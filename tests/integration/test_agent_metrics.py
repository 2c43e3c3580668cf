"""Agent and connection metrics against a real nats-server, one fresh registry per test."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import msgspec
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry

from actors import Agent, AgentHost, EchoAgent, MathAgent
from bus import (
    AgentError,
    AgentMessage,
    AgentMetrics,
    AgentOverloaded,
    ConnectionMetrics,
    EmbeddedServer,
    TaskClient,
    connect,
)

pytestmark = pytest.mark.anyio


class Gate(Agent):
    """Holds every task until the test opens the gate: a slow agent on demand."""

    kind = "gate"
    capabilities = ("gate",)

    def __init__(self, agent_id: str, **kwargs: Any) -> None:
        super().__init__(agent_id, **kwargs)
        self.opened = anyio.Event()

    async def handle(self, task: AgentMessage) -> Any:
        await self.opened.wait()
        return task.payload


class Crash(Agent):
    """Raises whatever it is sent: an unknown exception is a 500."""

    kind = "crash"
    capabilities = ("crash",)

    async def handle(self, task: AgentMessage) -> Any:
        raise RuntimeError(f"crashed on {task.payload!r}")


class Relay(Agent):
    """Delegates ``body`` to the capability ``to`` and returns its result."""

    kind = "relay"
    capabilities = ("relay",)

    async def handle(self, task: AgentMessage) -> Any:
        p = task.payload
        return await self.context.delegate(p["to"], p.get("body"), timeout=p.get("timeout"))


def total(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    return sum(
        sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


@asynccontextmanager
async def hosted(
    nc: Client, agents: list[Agent], prefix: str, **options: Any
) -> AsyncIterator[tuple[CollectorRegistry, AgentHost, TaskClient]]:
    registry = CollectorRegistry()
    async with AgentHost(nc, agents, prefix=prefix, metrics=AgentMetrics(registry), **options) as h:
        yield registry, h, TaskClient(nc, prefix=prefix, default_timeout=10)


async def test_a_completed_task_is_counted_and_timed(nc: Client, prefix: str) -> None:
    async with hosted(nc, [MathAgent("m-1")], prefix) as (registry, _, client):
        assert (await client.request("math", {"expression": "6*7"})).payload == {"value": 42}
        labels = {"agent": "m-1", "capability": "math"}
        value = registry.get_sample_value
        assert value("callboard_agent_tasks_received_total", labels) == 1
        assert value("callboard_agent_tasks_completed_total", labels) == 1
        assert value("callboard_agent_task_duration_seconds_count", labels) == 1
        assert total(registry, "callboard_agent_tasks_failed_total") == 0
        assert value("callboard_agent_up", {"agent": "m-1", "kind": "math"}) == 1
        assert value("callboard_agent_max_concurrency", {"agent": "m-1"}) == 64
        for state, count in (("online", 1), ("accepted", 1), ("started", 1), ("completed", 1)):
            events = value("callboard_agent_status_events_total", {"agent": "m-1", "state": state})
            assert events == count, state


async def test_failures_are_counted_by_code(nc: Client, prefix: str) -> None:
    async with hosted(nc, [MathAgent("m-1"), Crash("c-1")], prefix) as (registry, _, client):
        with pytest.raises(AgentError) as bad_input:
            await client.request("math", {"expression": "1/0"})
        assert bad_input.value.code == 400
        with pytest.raises(AgentError) as crash:
            await client.request("crash", "boom")
        assert crash.value.code == 500
        failed = "callboard_agent_tasks_failed_total"
        assert total(registry, failed, agent="m-1", capability="math", code="400") == 1
        assert total(registry, failed, agent="c-1", capability="crash", code="500") == 1
        assert total(registry, "callboard_agent_tasks_completed_total") == 0
        assert total(registry, "callboard_agent_task_duration_seconds_count") == 2
        status = "callboard_agent_status_events_total"
        assert total(registry, status, state="failed") == 2


async def test_overload_is_a_rejection_and_in_flight_follows_the_task(
    nc: Client, prefix: str
) -> None:
    gate = Gate("g-1", max_concurrency=1)
    started = await nc.subscribe(f"{prefix}.status.g-1.started")
    async with hosted(nc, [gate], prefix) as (registry, _, client):
        in_flight = {"agent": "g-1"}
        assert registry.get_sample_value("callboard_agent_tasks_in_flight", in_flight) == 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.request, "gate", "held")
            await started.next_msg(timeout=5)
            assert registry.get_sample_value("callboard_agent_tasks_in_flight", in_flight) == 1
            with pytest.raises(AgentOverloaded) as refused:
                await client.request("gate", "one too many")
            assert refused.value.type == "overloaded"
            gate.opened.set()
        assert registry.get_sample_value("callboard_agent_tasks_in_flight", in_flight) == 0
        labels = {"agent": "g-1", "capability": "gate"}
        rejected = "callboard_agent_tasks_rejected_total"
        assert registry.get_sample_value(rejected, {**labels, "reason": "overloaded"}) == 1
        assert registry.get_sample_value(rejected, {**labels, "reason": "draining"}) == 0
        assert registry.get_sample_value("callboard_agent_tasks_completed_total", labels) == 1
        assert registry.get_sample_value("callboard_agent_tasks_received_total", labels) == 2
        # a refusal never ran: it has no handler time
        assert registry.get_sample_value("callboard_agent_task_duration_seconds_count", labels) == 1


async def test_a_task_sent_while_draining_is_rejected_not_failed(nc: Client, prefix: str) -> None:
    async with hosted(nc, [EchoAgent("e-1")], prefix) as (registry, host, client):
        await host.runners["e-1"].stop_intake()
        up = {"agent": "e-1", "kind": "echo"}
        assert registry.get_sample_value("callboard_agent_up", up) == 0
        with pytest.raises(AgentOverloaded) as refused:
            await client.request("echo", 1, agent_id="e-1")  # the direct address still listens
        assert refused.value.type == "draining"
        labels = {"agent": "e-1", "capability": "echo"}
        rejected = "callboard_agent_tasks_rejected_total"
        assert registry.get_sample_value(rejected, {**labels, "reason": "draining"}) == 1
        assert total(registry, "callboard_agent_tasks_failed_total") == 0


async def test_every_delegation_outcome_is_counted(nc: Client, prefix: str) -> None:
    gate = Gate("g-1")
    agents: list[Agent] = [Relay("r-1"), MathAgent("m-1"), gate]
    gate_started = await nc.subscribe(f"{prefix}.status.g-1.started")
    async with hosted(nc, agents, prefix) as (registry, _, client):

        async def relay_error(payload: Any, task_id: str | None = None) -> int:
            """The code of the error the relay passed on."""
            with pytest.raises(AgentError) as info:
                await client.request("relay", payload, task_id=task_id)
            return info.value.code

        await client.request("relay", {"to": "math", "body": {"expression": "1+1"}})
        assert await relay_error({"to": "nobody"}) == 404
        assert await relay_error({"to": "math", "body": {"expression": "1/0"}}) == 400
        assert await relay_error({"to": "gate", "timeout": 0.2}) == 408
        await gate_started.next_msg(timeout=5)

        async def cancel_when_the_gate_holds_it() -> None:
            await gate_started.next_msg(timeout=5)
            await client.cancel("relay-cancelled", "the test cancels it")

        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_when_the_gate_holds_it)
            assert await relay_error({"to": "gate"}, task_id="relay-cancelled") == 499

    def delegations(capability: str, outcome: str) -> float:
        labels = {"agent": "r-1", "capability": capability, "outcome": outcome}
        return registry.get_sample_value("callboard_agent_delegations_total", labels) or 0

    assert delegations("math", "ok") == 1
    assert delegations("nobody", "no_agent") == 1
    assert delegations("math", "agent_error") == 1
    assert delegations("gate", "timeout") == 1
    assert delegations("gate", "cancelled") == 1
    assert total(registry, "callboard_agent_delegations_total") == 5


async def test_received_is_completed_plus_failed_plus_rejected(nc: Client, prefix: str) -> None:
    gate = Gate("g-1", max_concurrency=2)
    agents: list[Agent] = [MathAgent("m-1"), Crash("c-1"), gate]
    started = await nc.subscribe(f"{prefix}.status.g-1.started")
    async with hosted(nc, agents, prefix) as (registry, host, client):
        async with anyio.create_task_group() as tg:
            for n in range(2):
                tg.start_soon(client.request, "gate", n)
            for _ in range(2):
                await started.next_msg(timeout=5)
            for _ in range(3):
                with pytest.raises(AgentOverloaded):
                    await client.request("gate", "full")
            for n in range(5):
                await client.request("math", {"expression": f"{n}+1"})
            for _ in range(2):
                with pytest.raises(AgentError):
                    await client.request("math", {"expression": "1/0"})
                with pytest.raises(AgentError):
                    await client.request("crash", None)
            gate.opened.set()
        await host.runners["m-1"].stop_intake()
        with pytest.raises(AgentOverloaded):
            await client.request("math", {"expression": "1"}, agent_id="m-1")

    received = total(registry, "callboard_agent_tasks_received_total")
    completed = total(registry, "callboard_agent_tasks_completed_total")
    failed = total(registry, "callboard_agent_tasks_failed_total")
    rejected = total(registry, "callboard_agent_tasks_rejected_total")
    assert (received, completed, failed, rejected) == (15, 7, 4, 4)
    for agent in ("m-1", "c-1", "g-1"):
        parts = sum(
            total(registry, f"callboard_agent_tasks_{end}_total", agent=agent)
            for end in ("completed", "failed", "rejected")
        )
        assert total(registry, "callboard_agent_tasks_received_total", agent=agent) == parts


async def test_agent_up_drops_to_zero_on_shutdown_and_a_removed_agent_vanishes(
    nc: Client, prefix: str
) -> None:
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry)
    up = "callboard_agent_up"
    async with AgentHost(
        nc, [EchoAgent("e-1"), EchoAgent("e-2")], prefix=prefix, metrics=metrics
    ) as host:
        client = TaskClient(nc, prefix=prefix)
        await client.request("echo", 1, agent_id="e-1")
        assert registry.get_sample_value(up, {"agent": "e-1", "kind": "echo"}) == 1
        assert host.agent_states == {"e-1": "serving", "e-2": "serving"}
        await host.remove("e-1")
        assert host.agent_states == {"e-2": "serving"}
        assert total(registry, "callboard_agent_tasks_received_total", agent="e-1") == 0
        assert not [
            s for f in registry.collect() for s in f.samples if s.labels.get("agent") == "e-1"
        ]
    assert registry.get_sample_value(up, {"agent": "e-2", "kind": "echo"}) == 0
    assert host.agent_states == {"e-2": "stopped"}
    status = {"agent": "e-2", "state": "offline"}
    assert registry.get_sample_value("callboard_agent_status_events_total", status) == 1


# --- the connection ------------------------------------------------------------------------


class LogWatch(logging.Handler):
    """Lets a test wait for a log message (the connection's callbacks log each change)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []
        self._changed = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def wait_for(self, text: str, timeout: float = 15.0, *, count: int = 1) -> None:
        """Until ``count`` messages hold ``text``."""
        with anyio.fail_after(timeout):
            while sum(text in message for message in self.messages) < count:
                await self._changed.wait()


@contextmanager
def watch_log(name: str) -> Iterator[LogWatch]:
    watch = LogWatch()
    logger = logging.getLogger(name)
    logger.addHandler(watch)
    try:
        yield watch
    finally:
        logger.removeHandler(watch)


async def test_a_server_restart_is_counted_as_a_reconnect(prefix: str) -> None:
    registry = CollectorRegistry()
    metrics = ConnectionMetrics(registry)
    labels = {"connection": "restart-test"}

    def value(name: str) -> float | None:
        return registry.get_sample_value(f"callboard_nats_{name}", labels)

    first = EmbeddedServer(jetstream=False)
    second: EmbeddedServer | None = None
    await anyio.to_thread.run_sync(first.start)
    try:
        port = first.port
        with watch_log("callboard.bus") as log:
            async with connect(
                first.url, name="restart-test", metrics=metrics, reconnect_wait=0.1
            ) as nc:
                assert (value("connected"), value("reconnects_total")) == (1, 0)
                await anyio.to_thread.run_sync(first.stop)
                await log.wait_for("disconnected from NATS")
                assert value("connected") == 0
                # with no server, what is published waits in the client's buffer
                await nc.publish(f"{prefix}.buffered", b"x" * 100)
                assert (value("pending_bytes") or 0) >= 100

                second = EmbeddedServer(port=port, jetstream=False)
                await anyio.to_thread.run_sync(second.start)
                await log.wait_for("reconnected to NATS")
                await nc.flush(timeout=5)
                assert (value("connected"), value("reconnects_total")) == (1, 1)
                assert value("pending_bytes") == 0
                downtime = value("disconnected_seconds_total")
                assert downtime is not None and downtime > 0
                assert value("disconnected_seconds_total") == downtime  # the outage is over
            assert value("connected") == 0
    finally:
        for server in (second, first):
            if server is not None:
                await anyio.to_thread.run_sync(server.stop)


async def test_slow_consumer_errors_are_counted(nats_url: str, prefix: str) -> None:
    registry = CollectorRegistry()
    release = anyio.Event()

    async def stuck(msg: Msg) -> None:
        await release.wait()

    with watch_log("callboard.bus") as log:
        async with connect(nats_url, name="slow-test", metrics=ConnectionMetrics(registry)) as nc:
            sub = await nc.subscribe(f"{prefix}.slow", cb=stuck, pending_msgs_limit=1)
            try:
                # one in the callback, one queued, the third is dropped
                for _ in range(3):
                    await nc.publish(f"{prefix}.slow", b"x")
                await log.wait_for("slow consumer", timeout=5)
                labels = {"connection": "slow-test"}
                name = "callboard_nats_slow_consumer_events_total"
                slow = registry.get_sample_value(name, labels)
                assert slow is not None and slow >= 1
            finally:
                release.set()
                await sub.unsubscribe()


async def test_a_flood_on_distinct_subjects_logs_one_repeated_slow_consumer_line(
    nats_url: str, prefix: str
) -> None:
    """nats-py names the dropped message's subject: a flood on a wildcard subscription
    (a monitor's status stream, an inbox) made one distinct warning per message, which
    the log's repeat limit could not fold. The line names the subscription instead."""
    registry = CollectorRegistry()
    release = anyio.Event()
    dropped = 20

    async def stuck(msg: Msg) -> None:
        await release.wait()

    def slow_consumer_events() -> float:
        labels = {"connection": "flood-test"}
        name = "callboard_nats_slow_consumer_events_total"
        return registry.get_sample_value(name, labels) or 0

    with watch_log("callboard.bus") as log:
        async with connect(nats_url, name="flood-test", metrics=ConnectionMetrics(registry)) as nc:
            sub = await nc.subscribe(f"{prefix}.flood.>", cb=stuck, pending_msgs_limit=1)
            try:
                for n in range(dropped + 2):  # one in the callback, one queued
                    await nc.publish(f"{prefix}.flood.{n}", b"x")
                await log.wait_for("slow consumer", timeout=10, count=dropped)
                assert slow_consumer_events() >= dropped  # each counted before it is logged
            finally:
                release.set()
                await sub.unsubscribe()
    lines = {m for m in log.messages if "slow consumer" in m}
    assert lines == {
        f"NATS connection error: slow consumer: messages dropped on subscription "
        f"{prefix}.flood.> (sid {sub._id})"
    }


async def test_answers_written_together_are_each_sent_and_counted(nc: Client, prefix: str) -> None:
    """A leader holds the answers of the tasks it runs through and writes them
    together (``Replier.release``, at most ``HELD_TASKS`` at a time): every task
    still gets its reply and its three events, in order, each counted once."""
    from actors._replier import HELD_TASKS

    tasks = 5 * HELD_TASKS
    events = await nc.subscribe(f"{prefix}.status.e-1.*")
    async with hosted(nc, [EchoAgent("e-1", max_concurrency=2 * tasks)], prefix) as hosting:
        registry, _, client = hosting
        replies: dict[int, Any] = {}

        async def one(i: int) -> None:
            replies[i] = (await client.request("echo", {"i": i}, task_id=f"t-{i}")).payload

        async with anyio.create_task_group() as tg:
            for i in range(tasks):
                tg.start_soon(one, i)
        assert replies == {i: {"i": i} for i in range(tasks)}
        for state in ("accepted", "started", "completed"):
            labels = {"agent": "e-1", "state": state}
            assert registry.get_sample_value("callboard_agent_status_events_total", labels) == tasks
    seen: dict[str, list[str]] = {}
    with anyio.fail_after(10):
        while sum(len(states) for states in seen.values()) < 3 * tasks:
            msg = await events.next_msg(timeout=10)
            state = msg.subject.rsplit(".", 1)[1]
            if state in ("accepted", "started", "completed"):
                seen.setdefault(msgspec.json.decode(msg.data)["task_id"], []).append(state)
    assert seen == {f"t-{i}": ["accepted", "started", "completed"] for i in range(tasks)}
