"""The attacks of issue 14, run against the shipped configs, and what each role may still do.

Every test starts nats-server from the repository's ``single.conf`` and
``accounts.conf`` (a copy with fresh dev secrets), runs real agents under their
agent users, and attacks as a compromised client of one role would: with a
raw nats-py connection that may do whatever its user's permissions allow.
Each attack must have no effect; each role's legitimate path must still work.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats_security_support import (
    DeployCopy,
    cli_env_for,
    logged_in,
    make_deploy_copy,
    secure_server,
    wait_until,
)
from prometheus_client import CollectorRegistry
from refusal_support import exactly, refusals
from system_support import Proc, wait_exit, wait_line, watch_status

from actors import Agent, AgentHost, EchoAgent, MathAgent, SummarizeAgent
from actors._runner import AgentRunner
from bus import (
    AgentError,
    AgentMetrics,
    ConnectionMetrics,
    ConnectOptions,
    DispatchMetrics,
    EmbeddedServer,
    MetricsServer,
    NoAgentError,
    RefusalMetrics,
    connect,
)
from bus.codec import CAPABILITY, OPERATION, TASK_ID
from bus.security import CANCEL_HASH, CANCEL_TOKEN
from orchestrator import Orchestrator

pytestmark = [pytest.mark.system, pytest.mark.anyio]

MONITOR_METRICS = re.compile(r"callboard monitor metrics on (http://\S+)/metrics")

TEXT = "NATS is a messaging system. Agents talk over it. The orchestrator routes tasks."


@pytest.fixture(scope="module")
def deploy(tmp_path_factory: pytest.TempPathFactory) -> DeployCopy:
    """deploy/nats copied, with secrets from its generator (bcrypt is slow: once)."""
    return make_deploy_copy(tmp_path_factory.mktemp("deploy-nats"))


def options(url: str, deploy: DeployCopy | None, user: str | None) -> ConnectOptions:
    """Log in as ``user`` with its own password and its own inbox prefix (each role
    may read only its own inbox)."""
    if deploy is None or user is None:
        return ConnectOptions(servers=(url,), connect_attempts=1)
    return ConnectOptions(
        servers=(url,),
        connect_attempts=1,
        user=user,
        password=deploy.passwords[user],
        inbox_prefix=deploy.env(user).get("NATS_INBOX_PREFIX"),
    )


@asynccontextmanager
async def fleet(
    url: str,
    deploy: DeployCopy | None,
    hosts: Mapping[str | None, Sequence[Agent]],
    *,
    metrics: dict[str, str] | None = None,
) -> AsyncIterator[dict[str, AgentRunner]]:
    """Agent hosts, each logged in as its user; yields the runners by agent id.

    Given ``metrics``, each host serves its ``/metrics`` as a daemon does, and
    ``metrics`` gets its base URL under each of its agents' ids.
    """
    async with AsyncExitStack() as stack:
        runners: dict[str, AgentRunner] = {}
        for user, agents in hosts.items():
            registry = CollectorRegistry()
            agent_metrics = AgentMetrics(registry)
            connections = ConnectionMetrics(registry, refusals=agent_metrics.refusals)
            if metrics is not None:
                server = await stack.enter_async_context(MetricsServer("127.0.0.1:0", registry))
                metrics.update((agent.id, server.url) for agent in agents)
            nc = await stack.enter_async_context(
                connect(options=options(url, deploy, user), metrics=connections)
            )
            host = await stack.enter_async_context(
                AgentHost(nc, list(agents), heartbeat_interval=0.2, metrics=agent_metrics)
            )
            runners.update(host.runners)
        yield runners


@asynccontextmanager
async def director(
    url: str,
    deploy: DeployCopy | None,
    live: set[str],
    *,
    registry: CollectorRegistry | None = None,
) -> AsyncIterator[Orchestrator]:
    """An orchestrator logged in as ``orchestrator`` that has seen ``live`` come up; its
    metrics (refusals included) go to ``registry`` if given."""
    refusals = None if registry is None else RefusalMetrics(registry)
    metrics = None if registry is None else DispatchMetrics(registry, refusals=refusals)
    async with (
        connect(options=options(url, deploy, "orchestrator" if deploy else None)) as nc,
        Orchestrator(nc, name="test", metrics=metrics) as orch,
    ):
        await orch.registry.wait_for(lambda agents: live <= {a.id for a in agents})
        yield orch


class Inbox:
    """Every message a subscription of the attacker's receives."""

    def __init__(self) -> None:
        self.messages: list[Msg] = []

    async def on_message(self, msg: Msg) -> None:
        self.messages.append(msg)


def heartbeat(agent: str, capabilities: list[str], max_concurrency: int = 10_000) -> bytes:
    return json.dumps(
        {
            "v": 1,
            "state": "heartbeat",
            "agent": agent,
            "ts": time.time(),
            "capabilities": capabilities,
            "in_flight": 0,
            "max_concurrency": max_concurrency,
            "interval": 0.2,
        }
    ).encode()


def info_claiming(agent: str, capability: str, keywords: str) -> bytes:
    return json.dumps(
        {
            "type": "io.nats.micro.v1.info_response",
            "name": "math",
            "id": agent,
            "version": "1.0.0",
            "description": "",
            "metadata": {"agent_id": agent, "prefix": "agents", "framework": "callboard"},
            "endpoints": [
                {
                    "name": capability,
                    "subject": f"agents.task.{capability}",
                    "queue_group": "callboard",
                    "metadata": {"keywords": keywords, "description": "", "input_schema": "{}"},
                }
            ],
        }
    ).encode()


# --- 1. nothing is believed because an agent said it -----------------------------------------


async def test_a_math_agent_cannot_hijack_summarize_by_heartbeat_info_or_direct_address(
    deploy: DeployCopy,
) -> None:
    async with (
        secure_server(deploy.config("single.conf")) as server,
        fleet(server.url, deploy, {"agent-summarize": [SummarizeAgent("summarize-1")]}),
        logged_in(server.url, deploy, "agent-math") as (attacker, violations),
    ):
        stolen: list[Msg] = []

        async def answer_pwned(msg: Msg) -> None:
            stolen.append(msg)
            headers = {TASK_ID: (msg.headers or {}).get(TASK_ID, ""), "Agent-Id": "summarize-1"}
            await attacker.publish(msg.reply, b'"PWNED"', headers=headers)

        # its own control address is allowed; the summarize direct address is not
        await attacker.subscribe("agents.agent.math-3", cb=answer_pwned)
        await attacker.subscribe("agents.agent.summarize.math-3", cb=answer_pwned)
        await violations.wait_for("subscription", "agents.agent.summarize.math-3")

        async def answer_info(msg: Msg) -> None:
            await attacker.publish(msg.reply, info_claiming("math-3", "summarize", "summarize"))

        await attacker.subscribe("$SRV.INFO", cb=answer_info)
        await attacker.flush()
        async with director(server.url, deploy, {"summarize-1"}) as orch:
            await attacker.publish(
                "agents.status.math-3.heartbeat", heartbeat("math-3", ["summarize"])
            )
            await orch.registry.wait_for(lambda agents: "math-3" in {a.id for a in agents})
            await orch.discover()  # the forged INFO answer is heard too
            for _ in range(8):
                result = await orch.run(f"summarize '{TEXT}'", timeout=10)
                (step,) = result.steps
                assert step.result != "PWNED"
                assert step.agent == "summarize-1"
                assert "summary" in step.result
            assert stolen == []
            confirmed = {a.id: a.capabilities for a in await orch.registry.confirmed()}
            assert confirmed == {"summarize-1": ("summarize",)}


async def test_a_forged_info_answer_cannot_steer_free_text_to_another_capability(
    deploy: DeployCopy,
) -> None:
    # agent-echo answers every $SRV.INFO as if it were summarize-1, giving summarize the
    # keyword "calculate": only what summarize-1 answers on its bound address counts
    async with (
        secure_server(deploy.config("single.conf")) as server,
        fleet(
            server.url,
            deploy,
            {
                "agent-math": [MathAgent("math-1")],
                "agent-summarize": [SummarizeAgent("summarize-1")],
            },
        ),
        logged_in(server.url, deploy, "agent-echo") as (attacker, _),
    ):

        async def answer_info(msg: Msg) -> None:
            await attacker.publish(
                msg.reply, info_claiming("summarize-1", "summarize", "calculate,6,7")
            )

        await attacker.subscribe("$SRV.INFO", cb=answer_info)
        await attacker.flush()
        async with director(server.url, deploy, {"math-1", "summarize-1"}) as orch:
            for _ in range(6):
                await orch.discover()  # the forgery is heard again before each request
                result = await orch.run("calculate 6*7", timeout=10)
                assert [(s.capability, s.result) for s in result.steps] == [("math", {"value": 42})]


@pytest.mark.parametrize("shipped", [True, False], ids=["shipped config", "open bus"])
async def test_a_fake_heartbeat_neither_starves_nor_steers_a_capability_with_real_agents(
    deploy: DeployCopy, shipped: bool
) -> None:
    # on the shipped config agent-math may speak for math-4 (listed, not running);
    # on an open bus anyone may speak for an id that sorts first
    ghost = "math-4" if shipped else "aaa-ghost"
    server_cm = secure_server(deploy.config("single.conf")) if shipped else EmbeddedServer()
    login = deploy if shipped else None
    async with server_cm as server, fleet(server.url, login, {"agent-math": [MathAgent("math-1")]}):
        async with director(server.url, login, {"math-1"}) as orch:
            attacker = Client()
            await attacker.connect(
                servers=[server.url], **(deploy.login("agent-math") if shipped else {})
            )
            try:
                await attacker.publish(
                    f"agents.status.{ghost}.heartbeat", heartbeat(ghost, ["math"], 1_000_000)
                )
                await orch.registry.wait_for(lambda agents: ghost in {a.id for a in agents})
                for _ in range(6):
                    result = await orch.run("calculate 6*7", timeout=10)
                    assert [(s.agent, s.result) for s in result.steps] == [
                        ("math-1", {"value": 42})
                    ]
                # its direct address has no listener: the server binds it to agent-math's
                # real agents (or, on an open bus, nobody answers for the ghost)
                with pytest.raises(NoAgentError):
                    await orch.dispatch("math", {"expression": "1+1"}, agent_id=ghost)
            finally:
                await attacker.close()


NESTED_PAST_THE_LIMIT = (
    b'{"v": 1, "state": "heartbeat", "agent": "math", "ts": 1, "x": '
    + b"[" * 100_000
    + b"]" * 100_000
    + b"}"
)
"""A status event msgspec cannot decode: it raises RecursionError, not a DecodeError."""


async def test_a_status_event_whose_body_names_another_agent_is_dropped_and_counted(
    deploy: DeployCopy,
) -> None:
    registry = CollectorRegistry()
    async with (
        secure_server(deploy.config("single.conf")) as server,
        fleet(server.url, deploy, {"agent-summarize": [SummarizeAgent("summarize-1")]}),
        director(server.url, deploy, {"summarize-1"}, registry=registry) as orch,
        MetricsServer("127.0.0.1:0", registry) as metrics,
        logged_in(server.url, deploy, "agent-math") as (attacker, _),
    ):
        assert await refusals(metrics.url) == exactly({})  # honest heartbeats so far
        removed: list[str] = []
        orch.registry.on_change = lambda agent_id, agent, _: (
            removed.append(agent_id) if agent is None else None
        )
        forged = {"v": 1, "state": "offline", "agent": "summarize-1", "ts": time.time()}
        # a body whose state disagrees with its subject (heartbeat) is a forgery too; the
        # registry reads each state's events in order, so an honest event behind each
        # forged one on the same subscription says when the forged one was read
        await attacker.publish("agents.status.math.heartbeat", json.dumps(forged).encode())
        await attacker.publish("agents.status.math.heartbeat", b"\x00 not an event")
        await attacker.publish("agents.status.math.heartbeat", NESTED_PAST_THE_LIMIT)
        await attacker.publish("agents.status.math-2.heartbeat", heartbeat("math-2", ["math"]))
        await orch.registry.wait_for(lambda agents: "math-2" in {a.id for a in agents})
        await attacker.publish("agents.status.math.offline", json.dumps(forged).encode())
        honest = {"v": 1, "state": "offline", "agent": "math-2", "ts": time.time()}
        await attacker.publish("agents.status.math-2.offline", json.dumps(honest).encode())
        await orch.registry.wait_for(lambda agents: "math-2" not in {a.id for a in agents})
        assert removed == ["math-2"]
        assert orch.registry.rejected_events == 2
        expected = {"status_body_mismatch": 2, "malformed_status_event": 2}
        assert await refusals(metrics.url) == exactly(expected)
        result = await orch.run(f"summarize '{TEXT}'", timeout=10)
        assert result.steps[0].agent == "summarize-1"
        assert await refusals(metrics.url) == exactly(expected)


async def test_the_monitor_drops_a_status_event_whose_body_names_another_agent(
    deploy: DeployCopy,
    procs: Callable[..., Proc],
    callboard_cmd: list[str],
) -> None:
    async with (
        secure_server(deploy.config("single.conf")) as server,
        logged_in(server.url, deploy, "agent-math") as (attacker, _),
    ):
        env = cli_env_for(server.url, deploy, "monitor")
        follow = procs(
            [*callboard_cmd, "monitor", "--json", "--state", "offline", "--metrics", ":0"],
            env=env,
            name="monitor",
        )
        url = MONITOR_METRICS.search(await wait_line(follow.stderr, MONITOR_METRICS))
        assert url is not None
        await wait_line(follow.stderr, "following")
        assert await refusals(url.group(1)) == exactly({})
        forged = {"v": 1, "state": "offline", "agent": "summarize-1", "ts": time.time()}
        await attacker.publish("agents.status.math.offline", json.dumps(forged).encode())
        # its state disagrees with the subject's; and a body that is no event at all
        await attacker.publish("agents.status.math.heartbeat", json.dumps(forged).encode())
        await attacker.publish("agents.status.math.heartbeat", b"\x00 not an event")
        # nested past msgspec's limit: its RecursionError ended the monitor
        await attacker.publish("agents.status.math.heartbeat", NESTED_PAST_THE_LIMIT)
        honest = {"v": 1, "state": "offline", "agent": "math-2", "ts": time.time()}
        await attacker.publish("agents.status.math-2.offline", json.dumps(honest).encode())
        # the monitor reads the stream in order: the honest event comes after the others
        await wait_line(follow.stdout, '"math-2"')
        expected = {"status_body_mismatch": 2, "malformed_status_event": 2}
        assert await refusals(url.group(1)) == exactly(expected)
        follow.send_signal(signal.SIGTERM)
        assert await wait_exit(follow) == 0, follow.output()
        await anyio.to_thread.run_sync(follow.stdout.wait_eof)
        (line,) = follow.stdout.text.splitlines()
        assert json.loads(line)["agent"] == "math-2"


# --- 2. no reflection ------------------------------------------------------------------------

REFLECTED_REPLIES = [
    "agents.status.math-1.offline",
    "agents.task.echo",
    "agents.agent.echo.echo-1",
    "agents.cancel",
    "$SRV.PING",
    "$JS.API.STREAM.DELETE.AGENTS_TASKS",
    "$KV.AGENTS_TASKS.victim",
    "somewhere.else",
]


@pytest.mark.parametrize("reply", REFLECTED_REPLIES)
async def test_an_agent_never_answers_a_task_to_a_subject_that_is_not_an_inbox(
    deploy: DeployCopy, reply: str
) -> None:
    async with (
        secure_server(deploy.config("single.conf")) as server,
        fleet(
            server.url,
            deploy,
            {"agent-echo": [EchoAgent("echo-1")], "agent-math": [MathAgent("math-1")]},
            metrics=(metrics := {}),
        ) as runners,
        director(server.url, deploy, {"echo-1", "math-1"}) as orch,
        logged_in(server.url, deploy, "orchestrator") as (attacker, _),
        watch_status(attacker, "agents") as watch,
    ):
        assert await refusals(metrics["echo-1"]) == exactly({})
        forged = {"v": 1, "state": "offline", "agent": "math-1", "ts": time.time()}
        for subject in ("agents.task.echo", "agents.agent.echo.echo-1"):
            await attacker.publish(
                subject, json.dumps(forged).encode(), reply=reply, headers={TASK_ID: "reflect"}
            )
        # the control address: a ping reflected elsewhere
        await attacker.publish("agents.agent.echo-1", b"", reply=reply, headers={OPERATION: "ping"})
        await attacker.flush()
        # a sentinel behind them on the same connection and subscriptions
        sentinel = await orch.request("echo", {"sentinel": True}, timeout=10)
        assert sentinel.payload == {"sentinel": True}
        # echo publishes in order: had it run the queued forgery, its events (and a
        # reflected offline) would reach the watch before the sentinel's completion
        await watch.wait_state("completed", task_id=sentinel.task_id)
        assert not [e for e in watch.events if e.get("task_id") == "reflect"]
        assert "agents.status.math-1.offline" not in watch.subjects
        assert runners["echo-1"].counters["echo"].num_requests == 1  # the sentinel only
        # the direct addresses' callbacks run on their own tasks (no event: poll)
        await wait_until(lambda: runners["echo-1"].reply_guard.refused >= 3, 5, "counted")
        assert runners["echo-1"].counters["echo"].num_requests == 1
        assert not [e for e in watch.events if e.get("task_id") == "reflect"]
        assert "math-1" in {a.id for a in orch.agents}
        # one each, on the /metrics of the process that refused them, and no other
        assert await refusals(metrics["echo-1"]) == exactly({"reply_not_inbox": 3})
        assert await refusals(metrics["math-1"]) == exactly({})


async def test_the_monitor_cannot_inject_tasks_through_a_discovery_reply(
    deploy: DeployCopy,
) -> None:
    async with (
        secure_server(deploy.config("single.conf")) as server,
        fleet(
            server.url, deploy, {"agent-echo": [EchoAgent("echo-1")]}, metrics=(metrics := {})
        ) as runners,
        director(server.url, deploy, {"echo-1"}) as orch,
        logged_in(server.url, deploy, "monitor") as (monitor, _),
    ):
        for verb in ("PING", "INFO", "STATS", "PING.echo", "INFO.echo.echo-1"):
            await monitor.publish(f"$SRV.{verb}", b"", reply="agents.task.echo")
        await monitor.flush()
        # discovery still answers the monitor on its inbox
        info = json.loads((await monitor.request("$SRV.INFO.echo.echo-1", b"", timeout=5)).data)
        assert info["id"] == "echo-1"
        assert await orch.dispatch("echo", {"sentinel": 1}, timeout=10) == {"sentinel": 1}
        runner = runners["echo-1"]
        # discovery callbacks run on their own tasks (no event: poll)
        await wait_until(lambda: runner.reply_guard.refused >= 5, 5, "counted")
        assert runner.counters["echo"].num_requests == 1
        assert await refusals(metrics["echo-1"]) == exactly({"reply_not_inbox": 5})


# --- 3. cancels only by the caller -----------------------------------------------------------


async def test_another_login_reading_the_status_stream_cannot_cancel_a_task(
    deploy: DeployCopy,
) -> None:
    async with (
        secure_server(deploy.config("single.conf")) as server,
        fleet(
            server.url, deploy, {"agent-echo": [EchoAgent("echo-1")]}, metrics=(metrics := {})
        ) as runners,
        director(server.url, deploy, {"echo-1"}) as orch,
        logged_in(server.url, deploy, "orchestrator") as (attacker, _),
        watch_status(attacker, "agents") as watch,
    ):
        raw_stream: list[bytes] = []

        async def keep(msg: Msg) -> None:
            raw_stream.append(msg.data + json.dumps(msg.headers or {}).encode())

        await attacker.subscribe("agents.status.>", cb=keep)
        await attacker.flush()
        async with anyio.create_task_group() as tg:
            outcome: dict[str, object] = {}

            async def victim() -> None:
                outcome["result"] = await orch.dispatch(
                    "echo", {"delay_ms": 1500, "mine": True}, timeout=10
                )

            tg.start_soon(victim)
            accepted = await watch.wait_state("accepted", capability="echo")
            task_id = accepted["task_id"]
            await watch.wait_state("started", task_id=task_id)
            wrong = {TASK_ID: task_id, CANCEL_TOKEN: "0" * 32}
            await attacker.publish("agents.cancel", b"stop", headers={TASK_ID: task_id})
            await attacker.publish("agents.cancel", b"stop", headers=wrong)
            answer = await attacker.request(
                "agents.agent.echo-1",
                b"stop",
                timeout=5,
                headers={OPERATION: "cancel", TASK_ID: task_id},
            )
            refusal = json.loads(answer.data)
            assert refusal["cancelled"] is False
            assert "Agent-Cancel-Token" in refusal["error"]
            await attacker.flush()
            # the cancel callbacks run on their own tasks (no event: poll)
            await wait_until(lambda: runners["echo-1"].caller_cancels.refused >= 3, 5, "counted")
        assert outcome["result"] == {"delay_ms": 1500, "mine": True}
        assert await refusals(metrics["echo-1"]) == exactly({"cancel_token": 3})
        token = orch.client.cancel_keys.token(task_id)
        task_hash = orch.client.cancel_keys.hash_of(task_id)
        assert not [raw for raw in raw_stream if token.encode() in raw or task_hash.encode() in raw]


async def test_the_caller_cancels_its_own_task(deploy: DeployCopy) -> None:
    async with (
        secure_server(deploy.config("single.conf")) as server,
        fleet(server.url, deploy, {"agent-echo": [EchoAgent("echo-1")]}, metrics=(metrics := {})),
        director(server.url, deploy, {"echo-1"}) as orch,
        logged_in(server.url, deploy, "monitor") as (monitor, _),
        watch_status(monitor, "agents") as watch,
    ):

        async def cancel_once_started() -> None:
            started = await watch.wait_state("started", capability="echo")
            await orch.client.cancel(started["task_id"], "changed my mind")

        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_once_started)
            with pytest.raises(AgentError) as caught:
                await orch.dispatch("echo", {"delay_ms": 5000}, timeout=10)
        assert caught.value.code == 499
        cancelled = await watch.wait_state("cancelled", capability="echo")
        assert cancelled["reason"] == "changed my mind"
        assert await refusals(metrics["echo-1"]) == exactly({})  # the caller's own cancel


# --- the wire protocol change ------------------------------------------------------------------


async def test_an_old_client_sending_a_direct_task_to_the_control_address_gets_a_clear_error(
    deploy: DeployCopy,
) -> None:
    async with (
        secure_server(deploy.config("single.conf")) as server,
        fleet(server.url, deploy, {"agent-echo": [EchoAgent("echo-1")]}),
        logged_in(server.url, deploy, "orchestrator") as (nc, _),
    ):
        reply = await nc.request(
            "agents.agent.echo-1",
            b'{"x": 1}',
            timeout=5,
            headers={CAPABILITY: "echo", CANCEL_HASH: "ab" * 16},
        )
        assert reply.headers is not None
        assert reply.headers["Nats-Service-Error-Code"] == "400"
        assert "agents.agent.echo.echo-1" in reply.headers["Nats-Service-Error"]
        direct = await nc.request("agents.agent.echo.echo-1", b'{"x": 1}', timeout=5)
        assert json.loads(direct.data) == {"x": 1}
