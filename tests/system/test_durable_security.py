"""Durable state that running roles cannot wipe or forge (issue 14.5), under the
shipped deploy/nats/single.conf + accounts.conf and fresh dev secrets.

Each attack of the issue is tried by a raw client logged in as the attacking
user; the server must refuse it (and tell that client so) and the state must be
what it was. Next to the attacks, each role's legitimate durable path: the
``setup`` user creates the streams, ``orchestrator`` submits and reads, the
daemons' users (``agents``, ``llm-agents``) serve their capabilities' tasks.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import nats.js.errors
import pytest
from durable_security_support import login_options, secured_durable_server
from nats.aio.client import Client
from nats_security_support import (
    DeployCopy,
    Violations,
    logged_in,
    make_deploy_copy,
    violations_in_log,
)

from actors import AgentHost, EchoAgent, MathAgent
from bus import BadInput, ConnectionFailed, EmbeddedServer, connect, new_task_id
from bus.durable import DurableNames, DurableSettings, DurableTaskClient, TaskState, ensure_durable

pytestmark = [pytest.mark.system, pytest.mark.anyio]

NAMES = DurableNames("agents")
BUCKET_STREAM = f"KV_{NAMES.bucket}"
SETTINGS = DurableSettings(storage="memory", ack_wait=5, retry_delay=0.1)
RUNNING_ROLES = ("orchestrator", "monitor", "agents", "llm-agents", "agent-researcher")
"""Users of running roles that had, or might be thought to have, power over streams."""
ATTACKER_ROLES = (*RUNNING_ROLES, "agent-planner", "agent-math")


@pytest.fixture(scope="module")
def deploy(tmp_path_factory: pytest.TempPathFactory) -> DeployCopy:
    """deploy/nats copied, with secrets from its generator (bcrypt is slow: once)."""
    return make_deploy_copy(tmp_path_factory.mktemp("deploy-nats"))


@pytest.fixture
async def server(deploy: DeployCopy) -> AsyncIterator[EmbeddedServer]:
    """single.conf's server, with an empty JetStream store."""
    async with secured_durable_server(deploy) as running:
        yield running


async def set_up(server: EmbeddedServer, deploy: DeployCopy) -> None:
    async with connect(options=login_options(server, deploy, "setup")) as nc:
        done = await ensure_durable(nc.jetstream(timeout=10), NAMES, SETTINGS, update=True)
    assert all(line.endswith(": created") for line in done), done


@asynccontextmanager
async def system(server: EmbeddedServer, deploy: DeployCopy) -> AsyncIterator[DurableTaskClient]:
    """The streams set up, a daemon's agents (math, echo) under ``agents``, and a
    submitter under ``orchestrator``."""
    await set_up(server, deploy)
    async with (
        connect(options=login_options(server, deploy, "agents")) as agents_nc,
        AgentHost(
            agents_nc, [MathAgent("math"), EchoAgent("echo")], prefix="agents", durable=SETTINGS
        ),
        connect(options=login_options(server, deploy, "orchestrator")) as nc,
    ):
        yield DurableTaskClient(nc, prefix="agents", settings=SETTINGS)


async def six_times_seven(client: DurableTaskClient) -> str:
    task_id = new_task_id()
    await client.submit("math", {"expression": "6*7"}, task_id=task_id)
    assert await client.result(task_id, timeout=10) == {"value": 42}
    return task_id


def forged(task_id: str, capability: str = "math") -> bytes:
    return json.dumps(
        {
            "task_id": task_id,
            "capability": capability,
            "state": "completed",
            "submitted_at": 1.0,
            "updated_at": 2.0,
            "agent": capability,
            "result": {"value": 666},
        }
    ).encode()


async def refused(nc: Client, told: Violations, subject: str, body: bytes = b"{}") -> None:
    """Publish ``body`` on ``subject`` and wait for the server's refusal."""
    await nc.publish(subject, body, reply=nc.new_inbox())
    await told.wait_for("publish", subject)


async def test_no_running_role_may_change_delete_or_purge_a_stream(
    server: EmbeddedServer, deploy: DeployCopy
) -> None:
    async with system(server, deploy) as client:
        task_id = await six_times_seven(client)
        one_second = json.dumps(
            {"name": BUCKET_STREAM, "subjects": [f"$KV.{NAMES.bucket}.>"], "max_age": 10**9}
        ).encode()
        for user in RUNNING_ROLES:
            async with logged_in(server.url, deploy, user) as (nc, told):
                for stream in (BUCKET_STREAM, NAMES.tasks_stream):
                    await refused(nc, told, f"$JS.API.STREAM.UPDATE.{stream}", one_second)
                    await refused(nc, told, f"$JS.API.STREAM.DELETE.{stream}")
                    await refused(nc, told, f"$JS.API.STREAM.PURGE.{stream}")
                await refused(nc, told, f"$JS.API.STREAM.CREATE.{BUCKET_STREAM}x", one_second)
        bucket = await client.js.stream_info(BUCKET_STREAM)
        assert bucket.config.max_age == SETTINGS.result_ttl
        assert await client.result(task_id) == {"value": 42}


async def test_no_role_may_overwrite_or_purge_a_finished_record(
    server: EmbeddedServer, deploy: DeployCopy
) -> None:
    async with system(server, deploy) as client:
        task_id = await six_times_seven(client)
        record_key = NAMES.key_subject(NAMES.record_key("math", task_id))
        submission_key = NAMES.key_subject(NAMES.submission_key("math", task_id))
        purge = {"KV-Operation": "PURGE", "Nats-Rollup": "sub"}
        # a submitter may not write a record, nor purge one
        async with logged_in(server.url, deploy, "orchestrator") as (nc, told):
            await refused(nc, told, record_key, forged(task_id))
            await nc.publish(record_key, b"", headers=purge)
            await told.wait_for("publish", record_key)
            # its own submission key takes a forged outcome, which readers ignore
            await nc.jetstream().publish(submission_key, forged(task_id))
            with pytest.raises(nats.js.errors.APIError, match="rollup"):
                await nc.jetstream().publish(submission_key, b"", headers=purge)
        # an agent user may not write another capability's records ...
        echo_id = new_task_id()
        await client.submit("echo", {"n": 1}, task_id=echo_id)
        assert await client.result(echo_id, timeout=10) == {"n": 1}
        for user, key in (
            ("llm-agents", NAMES.record_key("echo", echo_id)),
            ("agent-researcher", NAMES.record_key("math", task_id)),
            ("agent-planner", NAMES.record_key("math", task_id)),
            ("agents", NAMES.submission_key("math", task_id)),
            ("monitor", NAMES.record_key("math", task_id)),
        ):
            async with logged_in(server.url, deploy, user) as (nc, told):
                await refused(nc, told, NAMES.key_subject(key), forged(task_id))
        # ... and may not purge even its own capability's: the bucket refuses rollups
        async with logged_in(server.url, deploy, "agents") as (nc, _):
            with pytest.raises(nats.js.errors.APIError, match="rollup"):
                await nc.jetstream().publish(record_key, b"", headers=purge)
        assert await client.result(task_id) == {"value": 42}
        assert await client.result(echo_id) == {"n": 1}
        # a submitter that claims the ID under another capability makes the bare ID
        # ambiguous (a clear error), never another capability's outcome
        async with logged_in(server.url, deploy, "orchestrator") as (nc, _):
            other = NAMES.key_subject(NAMES.submission_key("echo", task_id))
            await nc.jetstream().publish(other, forged(task_id, "echo"))
        with pytest.raises(BadInput, match="under capabilities echo, math"):
            await client.result(task_id)
        assert await client.result(f"math.{task_id}") == {"value": 42}
        states = [r.state for r in await client.history(f"math.{task_id}")]
        assert states == ["submitted", "submitted", "working", "completed"], states


async def test_each_role_reads_only_its_own_inbox(
    server: EmbeddedServer, deploy: DeployCopy
) -> None:
    for user in ATTACKER_ROLES:
        async with logged_in(server.url, deploy, user) as (nc, told):
            for subject in ("_INBOX.>", "_INBOX_orchestrator.>", ">"):
                if user == "orchestrator" and subject == "_INBOX_orchestrator.>":
                    continue
                await nc.subscribe(subject)
                await told.wait_for("subscription", subject)
    # the orchestrator's own inbox is its own: a durable task's result comes back there
    async with system(server, deploy) as client:
        await six_times_seven(client)


async def test_each_roles_durable_path_works_under_its_user(
    server: EmbeddedServer, deploy: DeployCopy
) -> None:
    # before the setup step, a running role says what to do instead of creating streams
    async with connect(options=login_options(server, deploy, "orchestrator")) as nc:
        with pytest.raises(ConnectionFailed, match="callboard setup"):
            await DurableTaskClient(nc, prefix="agents").submit("math", {"expression": "1"})
    async with system(server, deploy) as client:
        task_id = await six_times_seven(client)
        record = await client.record(task_id)
        assert (record.state, record.agent) == (TaskState.COMPLETED, "math")
        assert await client.record(f"math.{task_id}") == record
        # llm-agents serves durable tasks of its capabilities too (math here): the two
        # daemons share the capability's consumer, so math-2 soon takes one
        async with (
            connect(options=login_options(server, deploy, "llm-agents")) as llm_nc,
            AgentHost(llm_nc, [MathAgent("math-2")], prefix="agents", durable=SETTINGS),
        ):
            agents: set[str] = set()
            with anyio.fail_after(30):
                while "math-2" not in agents:
                    agents.add((await client.record(await six_times_seven(client))).agent)
    # the only violation was the refused create before the setup
    logged = violations_in_log(server)
    assert len(logged) == 1 and "STREAM.CREATE" in logged[0], "\n".join(logged)


async def test_the_orchestrators_consumer_read_does_not_let_it_delete_or_steer_consumers(
    server: EmbeddedServer, deploy: DeployCopy
) -> None:
    """The orchestrator may read a capability's consumer (to say at once that no agent
    serves durable tasks): reading is all. Deleting, creating or redirecting the
    consumer would silence or steal that capability's tasks."""
    async with system(server, deploy) as client:
        async with logged_in(server.url, deploy, "orchestrator") as (nc, told):
            info = await nc.jetstream().consumer_info(NAMES.tasks_stream, "math")
            assert info.name == "math"
            stolen = json.dumps(
                {
                    "stream_name": NAMES.tasks_stream,
                    "config": {"durable_name": "math", "deliver_subject": "stolen.math"},
                }
            ).encode()
            await refused(nc, told, f"$JS.API.CONSUMER.DELETE.{NAMES.tasks_stream}.math")
            await refused(nc, told, f"$JS.API.CONSUMER.CREATE.{NAMES.tasks_stream}.math", stolen)
            await refused(
                nc, told, f"$JS.API.CONSUMER.DURABLE.CREATE.{NAMES.tasks_stream}.math", stolen
            )
        assert await six_times_seven(client)  # the agents still serve their tasks
