"""A durable job whose ``Nats-Msg-Id`` (its task ID) is already in the work
queue's duplicate window, under the shipped deploy/nats logins.

The server drops such a job unstored and only says so in its acknowledgement. A
submitter that ignored that would report the task queued while no job of it
exists (it would never run), or while someone else's job runs under its ID
(whose result its caller would then read as its own).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

import pytest
from durable_security_support import durable_client, secured_durable_server
from nats_security_support import DeployCopy, logged_in, make_deploy_copy

from bus import BadInput, EmbeddedServer, new_task_id
from bus._cancel_token import CANCEL_HASH, CancelKeys
from bus.codec import TASK_ID
from bus.durable import MSG_ID, DurableNames, DurableSettings, DurableTaskClient

pytestmark = [pytest.mark.system, pytest.mark.anyio]

NAMES = DurableNames("agents")
SETTINGS = DurableSettings(storage="memory", ack_wait=5, retry_delay=0.1)


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


async def stored_jobs(client: DurableTaskClient) -> int:
    return (await client.js.stream_info(NAMES.tasks_stream)).state.messages


async def test_the_same_id_under_a_second_capability_is_refused_not_left_without_a_job(
    server: EmbeddedServer, deploy: DeployCopy
) -> None:
    async with submitter(server, deploy) as client:
        task_id = new_task_id()
        await client.submit("math", {"expression": "6*7"}, task_id=task_id)
        with pytest.raises(BadInput, match="duplicate window"):
            await client.submit("echo", {"hello": 1}, task_id=task_id)
        assert await stored_jobs(client) == 1
        # the math task is untouched, and resubmitting it is still harmless
        await client.submit("math", {"expression": "6*7"}, task_id=task_id)
        assert await stored_jobs(client) == 1


async def test_a_job_published_first_under_a_callers_id_is_reported_not_taken_as_the_callers(
    server: EmbeddedServer, deploy: DeployCopy
) -> None:
    """Another submitter login (the gateway's) that knows or guesses the ID a caller
    will use (ids are no secrets: `job-42`) publishes its own job under it first."""
    task_id = f"invoice-{new_task_id()}"
    squatter = CancelKeys()
    headers = {TASK_ID: task_id, MSG_ID: task_id, CANCEL_HASH: squatter.hash_of(task_id)}
    async with logged_in(server.url, deploy, "gateway", inbox_prefix="_INBOX_gateway") as (nc, _):
        ack = await nc.jetstream().publish(
            NAMES.job("math"), b'{"expression": "1+1"}', headers=headers
        )
        assert not ack.duplicate
    async with submitter(server, deploy) as client:
        with pytest.raises(BadInput, match="duplicate window"):
            await client.submit("math", {"expression": "6*7"}, task_id=task_id)
