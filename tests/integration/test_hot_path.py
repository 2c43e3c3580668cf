"""The hot path's own machinery, end to end: framed writes, the request inbox,
and a handler that answers at once against one that waits (same events, same
replies, the one that waits still cancellable and bounded by its deadline)."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import nats.errors
import pytest
from nats.aio.client import Client

from actors import Agent, AgentHost, EchoAgent
from bus import AgentMessage, TaskClient, TaskTimeout, connect, now_ms
from bus._inbox import inbox_for
from bus.codec import AGENT_ID, TASK_ID
from bus.wire import header_block, wire_for

pytestmark = pytest.mark.anyio


async def test_framed_messages_arrive_as_nats_py_would_send_them(nc: Client, prefix: str) -> None:
    sub = await nc.subscribe(f"{prefix}.wire.>")
    wire = wire_for(nc)
    headers = header_block({"Agent-Task-Id": "t-1", "X": "a\nb"})
    await wire.write(
        wire.hpub(f"{prefix}.wire.one", "reply.to", headers, b"body")
        + wire.pub(f"{prefix}.wire.two", b"plain"),
        2,
    )
    first = await sub.next_msg(timeout=5)
    second = await sub.next_msg(timeout=5)
    assert (first.subject, first.reply, first.data) == (f"{prefix}.wire.one", "reply.to", b"body")
    assert first.headers == {"Agent-Task-Id": "t-1", "X": "a b"}
    assert (second.subject, second.data, second.headers) == (f"{prefix}.wire.two", b"plain", None)
    with pytest.raises(nats.errors.MaxPayloadError):
        wire.pub(f"{prefix}.wire.big", b"x" * (nc.max_payload + 1))


async def test_a_closed_connection_refuses_framed_writes(nats_url: str) -> None:
    async with connect(nats_url, name="closing") as nc:
        wire = wire_for(nc)
    with pytest.raises(nats.errors.ConnectionClosedError):
        await wire.write(wire.pub("x.y", b"late"))


async def test_the_inbox_answers_times_out_and_knows_no_responders(nc: Client, prefix: str) -> None:
    async def echo(msg: Any) -> None:
        await nc.publish(msg.reply, msg.data + b"!", headers={"H": "v"})

    await nc.subscribe(f"{prefix}.svc", cb=echo)

    async def ignore(msg: Any) -> None:
        pass

    await nc.subscribe(f"{prefix}.silent", cb=ignore)
    inbox = inbox_for(nc)
    replies = []
    async with anyio.create_task_group() as tg:

        async def one(i: int) -> None:
            msg = await inbox.request(f"{prefix}.svc", header_block({}), b"%d" % i, 5)
            replies.append((msg.data, msg.headers))

        for i in range(50):
            tg.start_soon(one, i)
    assert sorted(replies) == sorted((b"%d!" % i, {"H": "v"}) for i in range(50))
    with pytest.raises(nats.errors.TimeoutError):
        await inbox.request(f"{prefix}.silent", header_block({}), b"", 0.05)
    with pytest.raises(nats.errors.NoRespondersError):
        await inbox.request(f"{prefix}.nobody", header_block({}), b"", 5)


async def test_requests_time_out_at_their_own_deadlines_in_any_order(
    nc: Client, prefix: str
) -> None:
    # in-order deadlines share the connection's timer; a shorter timeout made
    # after longer ones has a timer of its own; each fires at its deadline
    async def ignore(msg: Any) -> None:
        pass

    async def echo(msg: Any) -> None:
        await nc.publish(msg.reply, msg.data)

    await nc.subscribe(f"{prefix}.silent", cb=ignore)
    await nc.subscribe(f"{prefix}.echo", cb=echo)
    inbox = inbox_for(nc)
    waited: dict[str, float] = {}

    async def one(name: str, timeout: float) -> None:
        started = anyio.current_time()
        with pytest.raises(nats.errors.TimeoutError):
            await inbox.request(f"{prefix}.silent", header_block({}), b"", timeout)
        waited[name] = anyio.current_time() - started

    timeouts = {"long-1": 1.2, "long-2": 1.2, "short": 0.2, "middle": 0.6, "long-3": 1.2}
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for name, timeout in timeouts.items():
                tg.start_soon(one, name, timeout)
                await anyio.lowlevel.checkpoint()
        # answered: the timer stays armed for 5 s; a later 0.1 s request must not wait for it
        assert (await inbox.request(f"{prefix}.echo", header_block({}), b"hi", 5)).data == b"hi"
        await one("after", 0.1)
    timeouts["after"] = 0.1
    for name, timeout in timeouts.items():
        assert timeout <= waited[name] < timeout + 0.5, (name, waited)
    assert waited["short"] < waited["middle"] < min(waited["long-1"], waited["long-3"])


class Waits(Agent):
    """Echoes after a checkpoint, so its handler suspends."""

    kind = "waits"
    capabilities = ("waits",)

    async def handle(self, task: AgentMessage) -> Any:
        if isinstance(task.payload, dict) and task.payload.get("forever"):
            await anyio.sleep_forever()
        await anyio.lowlevel.checkpoint()
        return {"context": self.context.task.task_id, "payload": task.payload}


async def test_handlers_that_answer_at_once_or_wait_emit_the_same_events(
    nc: Client, prefix: str
) -> None:
    sub = await nc.subscribe(f"{prefix}.status.*.*")
    async with AgentHost(nc, [EchoAgent("e-1"), Waits("w-1")], prefix=prefix):
        client = TaskClient(nc, prefix=prefix)
        for capability, task_id in (("echo", "now-1"), ("waits", "later-1")):
            reply = await client.request(capability, {"n": 1}, task_id=task_id)
            assert reply.task_id == task_id and reply.sender in ("e-1", "w-1")
        assert (await client.request("waits", 7)).payload["context"]
        states: dict[str, list[str]] = {"now-1": [], "later-1": []}
        with anyio.fail_after(5):
            while len(states["now-1"]) < 3 or len(states["later-1"]) < 3:
                event = msgspec.json.decode((await sub.next_msg(timeout=5)).data)
                if event.get("task_id") in states:
                    states[event["task_id"]].append(event["state"])
        assert states == {
            "now-1": ["accepted", "started", "completed"],
            "later-1": ["accepted", "started", "completed"],
        }
        raw = await nc.request(f"{prefix}.task.echo", b'"x"', timeout=5)
        assert raw.data == b'"x"' and raw.headers is not None
        assert raw.headers[AGENT_ID] == "e-1" and raw.headers[TASK_ID]
        # a handler that waits is bounded by its deadline and can be cancelled
        with pytest.raises(TaskTimeout):
            await client.request("waits", {"forever": True}, timeout=0.2)
        failed = await nc.subscribe(f"{prefix}.status.w-1.cancelled")
        with anyio.move_on_after(0.2):
            await client.request("waits", {"forever": True}, task_id="gone-1")
        event = msgspec.json.decode((await failed.next_msg(timeout=5)).data)
        assert event["task_id"] == "gone-1"


class Gathers(Agent):
    """Each task waits until ``n`` tasks are running at once, then answers."""

    kind = "gathers"
    capabilities = ("gather",)

    def __init__(self, agent_id: str, n: int) -> None:
        super().__init__(agent_id, max_concurrency=n)
        self.n = n
        self.running = 0
        self.all_in = anyio.Event()

    async def handle(self, task: AgentMessage) -> Any:
        self.running += 1
        if self.running == self.n:
            self.all_in.set()
        await self.all_in.wait()
        return task.payload


async def test_tasks_that_wait_run_together_up_to_the_limit(nc: Client, prefix: str) -> None:
    # the worker leading the intake hands it over whenever its task waits, so
    # n waiting tasks are all admitted and running at once
    agent = Gathers("g-1", 20)
    async with AgentHost(nc, [agent], prefix=prefix):
        client = TaskClient(nc, prefix=prefix)
        results: list[Any] = []
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for i in range(20):

                    async def one(i: int = i) -> None:
                        results.append((await client.request("gather", i)).payload)

                    tg.start_soon(one)
    assert sorted(results) == list(range(20))


async def test_a_worker_whose_task_was_cut_short_serves_on(nc: Client, prefix: str) -> None:
    # one slot: the same few workers see every timeout and cancel in turn, each
    # answered by the worker, which then goes on with a fresh scope
    events = await nc.subscribe(f"{prefix}.status.w-1.*")

    async def until(task_id: str, state: str) -> None:
        with anyio.fail_after(5):
            while True:
                event = msgspec.json.decode((await events.next_msg(timeout=5)).data)
                if (event.get("task_id"), event["state"]) == (task_id, state):
                    return

    agent = Waits("w-1", max_concurrency=1)
    async with AgentHost(nc, [agent], prefix=prefix) as host:
        client = TaskClient(nc, prefix=prefix)
        for round_ in range(3):
            reply = await nc.request(
                f"{prefix}.task.waits",
                b'{"forever": true}',
                headers={TASK_ID: f"late-{round_}", "Agent-Deadline": str(now_ms() + 100)},
                timeout=5,
            )
            assert reply.headers is not None and reply.headers["Nats-Service-Error-Code"] == "408"
            assert reply.headers[TASK_ID] == f"late-{round_}"
            await until(f"late-{round_}", "failed")
            with anyio.move_on_after(0.1):
                await client.request("waits", {"forever": True}, task_id=f"gone-{round_}")
            await until(f"gone-{round_}", "cancelled")
            assert (await client.request("waits", round_)).payload["payload"] == round_
        runner = host.runners["w-1"]
        with anyio.fail_after(5):
            await runner.wait_idle()
        assert runner.in_flight == 0
