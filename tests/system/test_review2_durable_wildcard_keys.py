"""Keys whose capability token is a wildcard, written by a submitter login under
the shipped deploy/nats permissions.

nats-server stores a message published on ``$KV.AGENTS_TASKS.*.<id>.submitted``
(its subject is taken literally, and the grant ``$KV.AGENTS_TASKS.*.*.submitted``
matches it), and a reader that looks a bare task ID up by the wildcard
``*.<id>.submitted`` finds that key too. Its ``*`` is no capability: it must not
make the caller's ID ambiguous, nor turn "no such task" into a config error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from durable_security_support import login_options, secured_durable_server
from nats_security_support import DeployCopy, logged_in, make_deploy_copy

from bus import EmbeddedServer, UnknownTask, connect, new_task_id
from bus.durable import DurableNames, DurableSettings, DurableTaskClient, TaskState

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


def forged(task_id: str) -> bytes:
    return (
        f'{{"task_id": "{task_id}", "capability": "*", "state": "completed", '
        '"submitted_at": 1, "updated_at": 1}'
    ).encode()


async def test_a_wildcard_capability_key_neither_hides_nor_shadows_a_task(
    server: EmbeddedServer, deploy: DeployCopy
) -> None:
    async with connect(options=login_options(server, deploy, "orchestrator")) as nc:
        caller = DurableTaskClient(nc, prefix="agents", settings=SETTINGS)
        task_id, unknown = new_task_id(), new_task_id()
        await caller.submit("math", {"expression": "6*7"}, task_id=task_id)
        async with logged_in(server.url, deploy, "orchestrator") as (other, _):
            for each in (task_id, unknown):
                for capability in ("*", ">"):
                    key = f"$KV.AGENTS_TASKS.{capability}.{each}.submitted"
                    await other.jetstream().publish(key, forged(each))
        record = await caller.record(task_id)  # the bare ID, as `callboard status ID`
        assert (record.capability, record.state) == ("math", TaskState.SUBMITTED)
        with pytest.raises(UnknownTask):
            await caller.record(unknown)
