"""Poisoned durable keys, written by another submitter login under the shipped
deploy/nats permissions: a cancel request (or a submission) that is not what the
code expects must cost nothing but its own rejection. The task runs as its caller
sent it, readers answer, and the agent keeps taking tasks.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import pytest
from durable_security_support import durable_client, login_options, secured_durable_server
from nats_security_support import DeployCopy, logged_in, make_deploy_copy

from actors import AgentHost, EchoAgent, MathAgent
from bus import EmbeddedServer, connect, new_task_id
from bus.durable import (
    DurableNames,
    DurableSettings,
    DurableTaskClient,
    TaskState,
    message_size,
)

pytestmark = [pytest.mark.system, pytest.mark.anyio]

NAMES = DurableNames("agents")
SETTINGS = DurableSettings(storage="memory", ack_wait=5, retry_delay=0.1)
DEEP = 5000
"""Levels of JSON nesting: past Python's recursion limit, far below max_payload."""


def nested(task_id: str) -> bytes:
    return (
        f'{{"task_id": "{task_id}", "token": "ab", "requested_at": 1, "x": '.encode()
        + b"[" * DEEP
        + b"]" * DEEP
        + b"}"
    )


def huge(task_id: str) -> bytes:
    body = {"task_id": task_id, "token": "ab", "requested_at": 1, "sender": "x" * 600_000}
    return json.dumps(body).encode()


POISONED_CANCELS: dict[str, Callable[[str], bytes]] = {
    "nested": nested,
    "huge": huge,
    "not json": lambda _: b"\xff\xfe{",
    "another task's": lambda _: json.dumps(
        {"task_id": "other", "token": "ab", "requested_at": 1}
    ).encode(),
}


@pytest.fixture(scope="module")
def deploy(tmp_path_factory: pytest.TempPathFactory) -> DeployCopy:
    return make_deploy_copy(tmp_path_factory.mktemp("deploy-nats"))


@pytest.fixture
async def server(deploy: DeployCopy) -> AsyncIterator[EmbeddedServer]:
    async with secured_durable_server(deploy, SETTINGS) as running:
        yield running


def submitter(
    server: EmbeddedServer, deploy: DeployCopy, user: str = "orchestrator"
) -> AbstractAsyncContextManager[DurableTaskClient]:
    return durable_client(server, deploy, SETTINGS, user)


async def test_poisoned_cancel_requests_and_submissions_are_rejected_and_the_tasks_run(
    server: EmbeddedServer, deploy: DeployCopy
) -> None:
    async with submitter(server, deploy) as caller:
        poisoned = {name: new_task_id() for name in POISONED_CANCELS}
        overwritten, deleted = new_task_id(), new_task_id()
        for n, task_id in enumerate([*poisoned.values(), overwritten, deleted]):
            await caller.submit("math", {"expression": f"{n}+1"}, task_id=task_id)
        async with logged_in(server.url, deploy, "gateway", inbox_prefix="_INBOX_gateway") as (
            nc,
            _,
        ):
            js = nc.jetstream()
            for name, task_id in poisoned.items():
                key = NAMES.key_subject(NAMES.cancel_key("math", task_id))
                await js.publish(key, POISONED_CANCELS[name](task_id))
            key = NAMES.key_subject(NAMES.submission_key("math", overwritten))
            await js.publish(key, nested(overwritten))
            key = NAMES.key_subject(NAMES.submission_key("math", deleted))
            await js.publish(key, b"", headers={"KV-Operation": "DEL"})
        for name, task_id in poisoned.items():
            assert (await caller.record(task_id)).state == TaskState.SUBMITTED, name
        assert caller.store.forged_cancels == len(poisoned)
        # a submission written over (or deleted) since is read as its submitter made it
        for task_id in (overwritten, deleted):
            assert (await caller.record(task_id)).state == TaskState.SUBMITTED
            again = await caller.submit("math", {"expression": "0"}, task_id=task_id)
            assert again.state == TaskState.SUBMITTED  # the caller's retry is not refused

        async with (
            connect(options=login_options(server, deploy, "agents")) as agent_nc,
            AgentHost(agent_nc, [MathAgent("math"), EchoAgent("echo")], durable=SETTINGS),
        ):
            for n, task_id in enumerate([*poisoned.values(), overwritten, deleted]):
                record = await caller.wait(task_id, 20, capability="math")
                assert record.state == TaskState.COMPLETED, record
                assert await caller.result(task_id) == {"value": n + 1}


@pytest.mark.parametrize("header", ["Agent-Sender", "Agent-Cancel-Hash"])
async def test_a_job_with_a_huge_header_still_ends_with_a_record(
    server: EmbeddedServer, deploy: DeployCopy, header: str
) -> None:
    """A submitter's own job whose header (JetStream allows 64 KiB of them) is copied
    into the task's record: with a result that fits under max_payload alone, the
    record would not. The task must still end and the agent go on, not be delivered
    again until its attempts run out and then stay queued and ``working``."""
    task_id = new_task_id()
    headers = {"Agent-Task-Id": task_id, "Nats-Msg-Id": task_id, header: "f" * 60_000}
    async with logged_in(server.url, deploy, "orchestrator") as (nc, _):
        room = nc.max_payload - message_size(headers, b'{"text": ""}') - 64
        body = json.dumps({"text": "x" * room}).encode()  # the job just fits
        await nc.jetstream().publish(NAMES.job("echo"), body, headers=headers)
    async with (
        submitter(server, deploy) as caller,
        connect(options=login_options(server, deploy, "agents")) as agent_nc,
        AgentHost(agent_nc, [MathAgent("math"), EchoAgent("echo")], durable=SETTINGS),
    ):
        record = await caller.wait(task_id, 20, capability="echo")
        assert record.done, record
        assert len(record.sender) < 1000 and len(record.cancel_hash) < 1000
        after = new_task_id()
        await caller.submit("echo", {"n": 1}, task_id=after)
        assert await caller.result(after, timeout=20) == {"n": 1}
