"""Cancelling a durable task that no agent has taken yet, under the shipped
deploy/nats/single.conf + accounts.conf logins.

The caller's cancel must stick: when an agent comes up later, it must not run
the task, and every reader must say ``cancelled``. Another submitter login may
write the task's cancel key, but without the caller's token nothing changes:
the task runs and completes.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from durable_security_support import durable_client, login_options, secured_durable_server
from nats.aio.client import Client
from nats.aio.subscription import Subscription
from nats_security_support import (
    DeployCopy,
    cli_env_for,
    logged_in,
    make_deploy_copy,
    monitoring,
    wait_until,
)
from prometheus_client import CollectorRegistry
from system_support import run_cli_async

from actors import AgentHost, EchoAgent, MathAgent
from bus import (
    AgentMessage,
    AgentMetrics,
    EmbeddedServer,
    TaskCancelled,
    connect,
    new_task_id,
)
from bus._cancel_token import CancelKeys
from bus.durable import (
    DurableNames,
    DurableSettings,
    DurableTaskClient,
    TaskRecord,
    TaskState,
    decode_record,
    encode_record,
)
from orchestrator.cli import EXIT_AGENT_ERROR, EXIT_OK

pytestmark = [pytest.mark.system, pytest.mark.anyio]

NAMES = DurableNames("agents")
SETTINGS = DurableSettings(storage="memory", ack_wait=5, retry_delay=0.1)
PROMPTLY = 0.9
"""Seconds within which a waiting reader learns of a cancel: less than its first
re-read of the keys (1 s), so only the watch of the cancel request is that quick."""


class CountingMath(MathAgent):
    """The math agent, counting the tasks its handler is given."""

    def __init__(self, agent_id: str) -> None:
        super().__init__(agent_id)
        self.calls: list[str] = []

    async def handle(self, task: AgentMessage) -> Any:
        self.calls.append(task.task_id)
        return await super().handle(task)


@pytest.fixture(scope="module")
def deploy(tmp_path_factory: pytest.TempPathFactory) -> DeployCopy:
    """deploy/nats copied, with secrets from its generator (bcrypt is slow: once)."""
    return make_deploy_copy(tmp_path_factory.mktemp("deploy-nats"))


@pytest.fixture
async def server(deploy: DeployCopy) -> AsyncIterator[EmbeddedServer]:
    """single.conf's server, with an empty JetStream store, the streams set up."""
    async with secured_durable_server(deploy, SETTINGS) as running:
        yield running


def submitter(
    server: EmbeddedServer, deploy: DeployCopy, user: str = "orchestrator"
) -> AbstractAsyncContextManager[DurableTaskClient]:
    return durable_client(server, deploy, SETTINGS, user)


@asynccontextmanager
async def math_daemon(
    server: EmbeddedServer, deploy: DeployCopy, registry: CollectorRegistry | None = None
) -> AsyncIterator[CountingMath]:
    """The daemon of the shipped ``agents`` user, serving math and echo durable tasks
    (counting into ``registry`` if given)."""
    math = CountingMath("math")
    metrics = AgentMetrics(registry) if registry is not None else None
    async with (
        connect(options=login_options(server, deploy, "agents")) as nc,
        AgentHost(
            nc, [math, EchoAgent("echo")], prefix="agents", durable=SETTINGS, metrics=metrics
        ),
    ):
        yield math


async def record_written(sub: Subscription, task_id: str) -> TaskRecord:
    """The next final record an agent writes for ``task_id`` (watched on its key)."""
    with anyio.fail_after(20):
        while True:
            msg = await sub.next_msg(timeout=20)
            record = decode_record(msg.data, task_id=task_id, capability="math")
            if record.done:
                return record


async def watching_record(nc: Client, task_id: str) -> Subscription:
    return await nc.subscribe(NAMES.key_subject(NAMES.record_key("math", task_id)))


def subscribed(server: EmbeddedServer, subject: str) -> Callable[[], bool]:
    """Whether the server has a subscription matching ``subject`` in callboard's account."""

    def check() -> bool:
        found = monitoring(server, f"subsz?acc=CALLBOARD&test={subject}")
        return bool(found.get("num_matches") or found.get("total"))

    return check


async def test_a_queued_task_cancelled_by_its_caller_never_runs(
    server: EmbeddedServer, deploy: DeployCopy
) -> None:
    async with submitter(server, deploy) as client:
        task_id = new_task_id()
        submitted = await client.submit("math", {"expression": "6*7"}, task_id=task_id)
        assert submitted.state == TaskState.SUBMITTED  # no agent serves math yet
        cancel_subject = NAMES.key_subject(NAMES.cancel_key("math", task_id))
        ended: list[float] = []

        async def wait_for_the_result() -> None:
            with pytest.raises(TaskCancelled, match="cancelled by its caller"):
                await client.result(task_id, timeout=60)
            ended.append(time.monotonic())

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_for_the_result)
            await wait_until(subscribed(server, cancel_subject), 10, "watched")
            cancelled_at = time.monotonic()
            record = await client.cancel(task_id)
        assert record.state == TaskState.CANCELLED, record
        assert ended[0] - cancelled_at < PROMPTLY, ended[0] - cancelled_at
        assert (await client.record(task_id)).state == TaskState.CANCELLED
        with pytest.raises(TaskCancelled):
            await client.result(task_id)
        assert [r.state for r in await client.history(task_id)] == ["submitted", "cancelled"]

        watch = await watching_record(client.nc, task_id)
        async with math_daemon(server, deploy) as math:
            written = await record_written(watch, task_id)
            later = new_task_id()
            await client.submit("math", {"expression": "1+1"}, task_id=later)
            assert await client.result(later, timeout=20) == {"value": 2}
        assert math.calls == [later]  # the cancelled task never reached the handler
        assert (written.state, written.error and written.error.code) == (
            TaskState.CANCELLED,
            499,
        )
        assert "not run" in (written.error.message if written.error else "")
        states = [r.state for r in await client.history(task_id)]
        assert states == ["submitted", "working", "cancelled"], states
        with pytest.raises(TaskCancelled):
            await client.result(task_id)
        # submitting it again runs nothing either: it ended
        again = await client.submit("math", {"expression": "6*7"}, task_id=task_id)
        assert again.state == TaskState.CANCELLED


async def test_a_cancel_without_the_callers_token_does_not_stop_a_queued_task(
    server: EmbeddedServer, deploy: DeployCopy
) -> None:
    async with submitter(server, deploy) as client:
        task_id = new_task_id()
        await client.submit("math", {"expression": "6*7"}, task_id=task_id)
        the_hash = client.cancel_keys.hash_of(task_id)
        cancel_key = NAMES.key_subject(NAMES.cancel_key("math", task_id))
        submission_key = NAMES.key_subject(NAMES.submission_key("math", task_id))
        stranger = CancelKeys()

        def request(token: str | None) -> bytes:
            body: dict[str, Any] = {"task_id": task_id, "requested_at": time.time()}
            if token is not None:
                body["token"] = token
            return json.dumps(body).encode()

        # the gateway's login may write cancel requests of math tasks: none with the
        # caller's token (a wrong one, none, the task's hash itself, not JSON)
        async with logged_in(server.url, deploy, "gateway", inbox_prefix="_INBOX_gateway") as (
            nc,
            told,
        ):
            js = nc.jetstream()
            for forged in (
                request(stranger.token(task_id)),
                request(None),
                request(""),
                request(the_hash),
                b"cancel!",
            ):
                await js.publish(cancel_key, forged)
                record = await client.record(task_id)
                assert record.state == TaskState.SUBMITTED, (forged, record)
            assert told.messages == []
        # another orchestrator (same user, its own cancel secret) cancels it as its own
        async with submitter(server, deploy) as other:
            other.cancel_keys = stranger
            assert (await other.cancel(task_id)).state == TaskState.SUBMITTED
            # ... and writes the submission over with its own hash, to match its token
            submission = (await client.store.read("math", task_id)) or submitted_record(task_id)
            overwritten = msgspec.structs.replace(submission, cancel_hash=stranger.hash_of(task_id))
            await other.js.publish(submission_key, encode_record(overwritten))
            assert (await other.cancel(task_id)).state == TaskState.SUBMITTED
            assert (await client.record(task_id)).state == TaskState.SUBMITTED
        assert client.store.forged_cancels >= 3

        watch = await watching_record(client.nc, task_id)
        registry = CollectorRegistry()
        async with math_daemon(server, deploy, registry) as math:
            written = await record_written(watch, task_id)
        assert written.state == TaskState.COMPLETED, written
        assert math.calls == [task_id]
        # the agent read the last request (the stranger's) and counted it as refused
        refused = {"reason": "cancel_token"}
        assert registry.get_sample_value("callboard_refused_messages_total", refused) == 1
        assert await client.result(task_id) == {"value": 42}


def submitted_record(task_id: str) -> TaskRecord:
    now = time.time()
    return TaskRecord(
        task_id=task_id,
        capability="math",
        state=TaskState.SUBMITTED,
        submitted_at=now,
        updated_at=now,
    )


async def test_callboard_cancel_of_a_queued_task(
    server: EmbeddedServer, deploy: DeployCopy, tmp_path: Path, callboard_cmd: list[str]
) -> None:
    env = cli_env_for(server.url, deploy, "orchestrator")
    env["CALLBOARD_CANCEL_KEY_FILE"] = str(tmp_path / "cancel.key")
    stranger = {**env, "CALLBOARD_CANCEL_KEY_FILE": str(tmp_path / "stranger.key")}

    async def cli(*args: str, environ: dict[str, str] = env) -> tuple[int, str, str]:
        done = await run_cli_async(callboard_cmd, environ, [*args, "--prefix", "agents"])
        return done.returncode, done.stdout, done.stderr

    task_id = new_task_id()
    code, out, err = await cli(
        "submit", "math", '{"expression": "6*7"}', "--durable", "--no-wait", "--task-id", task_id
    )
    assert code == EXIT_OK, err
    assert oct((tmp_path / "cancel.key").stat().st_mode & 0o777) == "0o600"
    # another user's key cannot cancel it, and says so
    await cli("submit", "math", '{"expression": "1"}', "--no-wait", environ=stranger)
    code, out, err = await cli("cancel", task_id, environ=stranger)
    assert code == EXIT_AGENT_ERROR, (out, err)
    assert "is not cancelled" in err
    code, out, err = await cli("cancel", task_id)
    assert code == EXIT_OK, err
    assert f"task {task_id}: cancelled" in out
    code, out, err = await cli("status", task_id)
    assert f"task {task_id}: cancelled" in out, (out, err)
    code, out, err = await cli("result", task_id)
    assert code != EXIT_OK and "cancelled" in err, (code, out, err)

    async with submitter(server, deploy) as client:
        watch = await watching_record(client.nc, task_id)
        async with math_daemon(server, deploy) as math:
            written = await record_written(watch, task_id)
    assert written.state == TaskState.CANCELLED
    assert task_id not in math.calls
    # a task that already ended stays as it ended, and the cancel says so
    done_id = new_task_id()
    async with math_daemon(server, deploy):
        code, out, err = await cli(
            "submit", "math", '{"expression": "2+2"}', "--durable", "--task-id", done_id
        )
        assert (code, out) == (EXIT_OK, '{"value":4}\n'), err
    code, out, err = await cli("cancel", done_id)
    assert code == EXIT_AGENT_ERROR and "already ended completed" in err, (code, out, err)


async def test_a_submitter_overwriting_a_cancel_request_can_only_deny_it(
    server: EmbeddedServer, deploy: DeployCopy
) -> None:
    """The attack the grants still allow (README: what a submitter can still do): another
    submitter login writes over the caller's cancel request before an agent takes the
    task. It cannot forge anything: the task runs as its caller sent it, the forged
    request is counted as refused, and the result is the caller's own."""
    async with submitter(server, deploy) as client:
        task_id = new_task_id()
        await client.submit("math", {"expression": "6*7"}, task_id=task_id)
        assert (await client.cancel(task_id)).state == TaskState.CANCELLED
        cancel_key = NAMES.key_subject(NAMES.cancel_key("math", task_id))
        async with logged_in(server.url, deploy, "gateway", inbox_prefix="_INBOX_gateway") as (
            nc,
            _,
        ):
            forged = {"task_id": task_id, "token": CancelKeys().token(task_id)}
            await nc.jetstream().publish(cancel_key, json.dumps(forged).encode())
        # readers no longer see a cancel they can prove: the denial is visible at once
        assert (await client.record(task_id)).state == TaskState.SUBMITTED

        watch = await watching_record(client.nc, task_id)
        registry = CollectorRegistry()
        async with math_daemon(server, deploy, registry) as math:
            written = await record_written(watch, task_id)
        assert (written.state, math.calls) == (TaskState.COMPLETED, [task_id])
        assert await client.result(task_id) == {"value": 42}
        refused = {"reason": "cancel_token"}
        assert registry.get_sample_value("callboard_refused_messages_total", refused) == 1
