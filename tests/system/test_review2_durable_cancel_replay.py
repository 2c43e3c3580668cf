"""Replaying a caller's cancel token on another durable task of the same ID, under
the shipped deploy/nats logins.

A cancel request is stored in plain text (``<capability>.<task_id>.cancel``), and
every submitter login may read it. A token that cancels one task must therefore
cancel no other: not the caller's task of the same ID under another capability,
nor the caller's later task that reuses the ID once the first one's records expired.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, suppress

import anyio
import pytest
from durable_security_support import durable_client, login_options, secured_durable_server
from nats_security_support import DeployCopy, make_deploy_copy
from prometheus_client import CollectorRegistry

from actors import AgentHost, EchoAgent, MathAgent
from bus import (
    AgentMetrics,
    BadInput,
    EmbeddedServer,
    TaskCancelled,
    connect,
    new_task_id,
)
from bus.durable import (
    DurableNames,
    DurableSettings,
    DurableTaskClient,
    TaskState,
)

pytestmark = [pytest.mark.system, pytest.mark.anyio]

NAMES = DurableNames("agents")
SETTINGS = DurableSettings(storage="memory", ack_wait=5, retry_delay=0.1, duplicate_window=0.1)
"""A short duplicate window: the jobs of one ID under two capabilities share a
``Nats-Msg-Id``, so the second is stored only once the first one's window ended."""


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


async def test_a_stored_cancel_token_does_not_cancel_the_same_id_of_another_capability(
    server: EmbeddedServer, deploy: DeployCopy
) -> None:
    async with submitter(server, deploy) as caller, submitter(server, deploy) as other:
        task_id = new_task_id()
        await caller.submit("math", {"expression": "6*7"}, task_id=task_id)
        with anyio.fail_after(10):  # again until the echo job is stored, not deduplicated
            while (await caller.js.stream_info(NAMES.tasks_stream)).state.messages < 2:
                with suppress(BadInput):  # "taken" while the math job's window lasts
                    await caller.submit("echo", {"hello": 1}, task_id=task_id)
        assert (await caller.cancel(task_id, capability="math")).state == TaskState.CANCELLED
        # another submitter reads the caller's stored request and writes it, as is,
        # as the cancel request of the caller's echo task of the same ID
        math_key = NAMES.key_subject(NAMES.cancel_key("math", task_id))
        stored = await other.js.get_msg(other.store.stream, subject=math_key, direct=True)
        echo_key = NAMES.key_subject(NAMES.cancel_key("echo", task_id))
        await other.js.publish(echo_key, stored.data or b"")

        assert (await caller.record(f"echo.{task_id}")).state == TaskState.SUBMITTED
        registry = CollectorRegistry()
        math = MathAgent("math")
        async with (
            connect(options=login_options(server, deploy, "agents")) as nc,
            AgentHost(
                nc,
                [math, EchoAgent("echo")],
                prefix="agents",
                durable=SETTINGS,
                metrics=AgentMetrics(registry),
            ),
        ):
            echo_record = await caller.wait(task_id, 20, capability="echo")
            math_record = await caller.wait(task_id, 20, capability="math")
        assert echo_record.state == TaskState.COMPLETED, echo_record
        assert await caller.result(f"echo.{task_id}") == {"hello": 1}
        assert math_record.state == TaskState.CANCELLED  # the caller's own cancel holds
        with pytest.raises(TaskCancelled):
            await caller.result(f"math.{task_id}")
