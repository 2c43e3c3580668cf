"""Who may write, read and watch a durable task's cancel request, under the shipped
deploy/nats/accounts.conf: the request holds the caller's cancel token, so no role
but the submitters (and the gateway, for its own capabilities) writes it, and none
but those and the task's own capability's agents reads it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from durable_security_support import secured_durable_server
from nats_security_support import DeployCopy, logged_in, make_deploy_copy

from bus import EmbeddedServer, new_task_id
from bus.durable import DurableNames

pytestmark = [pytest.mark.system, pytest.mark.anyio]

NAMES = DurableNames("agents")
GET = "$JS.API.DIRECT.GET.KV_AGENTS_TASKS"
NOT_SUBMITTERS = ("monitor", "agents", "llm-agents", "agent-math", "agent-researcher")


@pytest.fixture(scope="module")
def deploy(tmp_path_factory: pytest.TempPathFactory) -> DeployCopy:
    return make_deploy_copy(tmp_path_factory.mktemp("deploy-nats"))


@pytest.fixture
async def server(deploy: DeployCopy) -> AsyncIterator[EmbeddedServer]:
    async with secured_durable_server(deploy) as running:
        yield running


def cancel_subject(capability: str, task_id: str) -> str:
    return NAMES.key_subject(NAMES.cancel_key(capability, task_id))


async def test_only_submitters_write_cancel_requests(
    server: EmbeddedServer, deploy: DeployCopy
) -> None:
    task_id = new_task_id()
    refused = [(user, cancel_subject("math", task_id)) for user in NOT_SUBMITTERS]
    refused.append(("gateway", cancel_subject("echo", task_id)))  # not a gateway capability
    # a capability that is no token of its own cannot widen the key either
    refused.append(("gateway", f"$KV.AGENTS_TASKS.math.{task_id}.x.cancel"))
    for user, subject in refused:
        async with logged_in(server.url, deploy, user) as (nc, told):
            await nc.publish(subject, b'{"task_id": "x", "token": "ab", "requested_at": 1}')
            await told.wait_for("publish", subject)


async def test_a_cancel_request_is_read_only_by_submitters_and_its_capabilitys_agents(
    server: EmbeddedServer, deploy: DeployCopy
) -> None:
    task_id = new_task_id()
    refused_reads = [
        ("monitor", "math"),
        ("agent-math", "math"),  # serves core tasks only
        ("agent-researcher", "math"),
        ("agents", "research"),
        ("llm-agents", "echo"),
        ("gateway", "echo"),
    ]
    for user, capability in refused_reads:
        subject = f"{GET}.{cancel_subject(capability, task_id)}"
        async with logged_in(server.url, deploy, user) as (nc, told):
            await nc.publish(subject, b"", reply=nc.new_inbox())
            await told.wait_for("publish", subject)
    refused_watches = [(user, "$KV.AGENTS_TASKS.*.*.cancel") for user in NOT_SUBMITTERS]
    refused_watches.append(("gateway", "$KV.AGENTS_TASKS.echo.*.cancel"))
    for user, subject in refused_watches:
        async with logged_in(server.url, deploy, user) as (nc, told):
            await nc.subscribe(subject)
            await told.wait_for("subscription", subject)
