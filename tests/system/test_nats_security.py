"""Security enforced by the server: deploy/nats's configs, run by real nats-servers.

Every test starts its own server(s) from the repository's configs (a copy with
fresh dev secrets, made by ``deploy/nats/gen_dev_secrets.py``), logs in as the
users of ``accounts.conf``, and checks what the server lets each one do: agents
publish and hear only their own subjects, a daemon serves its capability under
its agent user, strangers are refused, TLS and mutual TLS are required where
configured, ``max_payload`` holds, and the three cluster configs form a cluster.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio
import nats.errors
import pytest
from nats_security_support import (
    GENERATOR,
    DeployCopy,
    check_config,
    cli_env_for,
    cluster_configs,
    logged_in,
    make_deploy_copy,
    monitoring,
    route_peers,
    secure_server,
    violations_in_log,
    wait_until,
)
from system_support import Daemon, Proc, wait_exit, wait_line, watch_status
from system_support import run_cli_async as cli

from actors import Agent, AgentHost, MathAgent
from bus import (
    AgentMessage,
    ConnectionFailed,
    ConnectOptions,
    EmbeddedServer,
    PayloadTooLarge,
    TaskClient,
    connect,
)
from orchestrator.cli import EXIT_CONNECTION, EXIT_OK

pytestmark = [pytest.mark.system, pytest.mark.anyio]


@pytest.fixture(scope="module")
def deploy(tmp_path_factory: pytest.TempPathFactory) -> DeployCopy:
    """deploy/nats copied, with secrets from its generator (bcrypt is slow: once)."""
    return make_deploy_copy(tmp_path_factory.mktemp("deploy-nats"))


def options(
    url: str,
    deploy: DeployCopy,
    user: str | None = None,
    *,
    password: str | None = None,
    tls_ca: str | None = None,
) -> ConnectOptions:
    """Connection options that ignore the environment: only what the test says
    (``user``'s own password unless another is given)."""
    if user is not None and password is None:
        password = deploy.passwords[user]
    inbox_prefix = deploy.env(user).get("NATS_INBOX_PREFIX") if user is not None else None
    return ConnectOptions(
        servers=(url,),
        connect_attempts=1,
        user=user,
        password=password,
        tls_ca=tls_ca,
        inbox_prefix=inbox_prefix,
    )


# --- the configs and the generator ---------------------------------------------------------


def test_every_config_is_valid_with_generated_secrets(deploy: DeployCopy) -> None:
    configs = [
        deploy.config("single.conf"),
        deploy.config("single.conf", tls="tls.conf"),
        deploy.config("single.conf", tls="mtls.conf"),
        *(deploy.config(f"cluster/node-{n}.conf") for n in (1, 2, 3)),
        deploy.config("cluster/node-1.conf", tls="tls.conf"),
    ]
    for config in configs:
        result = check_config(config)
        assert result.returncode == 0, f"{config.name}: {result.stderr}"


def test_the_server_holds_password_hashes_and_the_secrets_are_private(deploy: DeployCopy) -> None:
    users_conf = (deploy.secrets / "users.conf").read_text()
    for user, password in deploy.passwords.items():
        assert password not in users_conf, f"{user}'s password is in clear in users.conf"
    hashes = re.findall(r'^\w+_PASSWORD: "(.*)"$', users_conf, re.MULTILINE)
    assert len(hashes) == len(deploy.passwords) >= 7
    assert all(h.startswith("$2") for h in hashes), hashes  # bcrypt
    for secret in [*deploy.secrets.glob("*-key.pem"), *deploy.secrets.glob("*.env")]:
        assert secret.stat().st_mode & 0o077 == 0, f"{secret.name} is readable by others"
    # the generator keeps what is there unless told otherwise
    again = subprocess.run(
        [sys.executable, str(GENERATOR), str(deploy.secrets)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert again.returncode == 1 and "--force" in again.stderr


# --- what an agent's user may not do -----------------------------------------------------


REFUSED_PUBLISH = {
    # id: (publisher, subject, witness user, witness subscription, its queue, sentinel sender)
    "another capability's task": (
        "agent-math",
        "agents.task.echo",
        "agent-echo",
        "agents.task.echo",
        "callboard",
        "orchestrator",
    ),
    "another agent's direct address": (
        "agent-math",
        "agents.agent.echo",
        "agent-echo",
        "agents.agent.echo",
        "",
        "orchestrator",
    ),
    "a delegation outside its list": (
        "agent-researcher",
        "agents.task.echo",
        "agent-echo",
        "agents.task.echo",
        "callboard",
        "orchestrator",
    ),
    "a task, by the monitor": (
        "monitor",
        "agents.task.math",
        "agent-math",
        "agents.task.math",
        "callboard",
        "orchestrator",
    ),
    "a cancel, by the monitor": (
        "monitor",
        "agents.cancel",
        "agent-math",
        "agents.cancel",
        "",
        "orchestrator",
    ),
}


@pytest.mark.parametrize(
    ("publisher", "subject", "witness", "watched", "queue", "sender"),
    list(REFUSED_PUBLISH.values()),
    ids=list(REFUSED_PUBLISH),
)
async def test_a_user_cannot_publish_outside_its_permissions(
    deploy: DeployCopy,
    publisher: str,
    subject: str,
    witness: str,
    watched: str,
    queue: str,
    sender: str,
) -> None:
    async with (
        secure_server(deploy.config("single.conf")) as server,
        logged_in(server.url, deploy, witness) as (witness_nc, _),
        logged_in(server.url, deploy, publisher) as (publisher_nc, violations),
        logged_in(server.url, deploy, sender) as (sender_nc, _),
    ):
        sub = await witness_nc.subscribe(watched, queue=queue)
        await witness_nc.flush()
        await publisher_nc.publish(subject, b"forbidden")
        await violations.wait_for("publish", subject)
        # The server decided on the forbidden message before it reported the
        # violation; had it delivered it, it would reach the witness before this.
        await sender_nc.publish(subject, b"sentinel")
        with anyio.fail_after(5):
            first = await sub.next_msg(timeout=5)
        assert first.data == b"sentinel"
    assert any(publisher in line and subject in line for line in violations_in_log(server))


async def test_an_agent_cannot_publish_another_agents_status(deploy: DeployCopy) -> None:
    async with (
        secure_server(deploy.config("single.conf")) as server,
        logged_in(server.url, deploy, "monitor") as (monitor, _),
        logged_in(server.url, deploy, "agent-math") as (agent, violations),
    ):
        async with watch_status(monitor, "agents") as watch:
            # another agent's, and an id of its own kind that accounts.conf does not list
            for forbidden in ("agents.status.echo.online", "agents.status.math-99.online"):
                await agent.publish(forbidden, b'{"state": "online", "agent": "forged"}')
                await violations.wait_for("publish", forbidden)
            await agent.publish(
                "agents.status.math-2.online", b'{"state": "online", "agent": "math-2"}'
            )
            await watch.wait_state("online", agent="math-2")
            # one connection's messages arrive in order: the forged ones never came
            assert watch.subjects == ["agents.status.math-2.online"]


REFUSED_SUBSCRIBE = {
    # id: (user, subject, queue, whether a request there must find no responder)
    "another capability's tasks": ("agent-math", "agents.task.echo", "callboard", True),
    "its tasks outside the queue group": ("agent-math", "agents.task.math", "", True),
    "the tasks, by the orchestrator": ("orchestrator", "agents.task.math", "callboard", True),
    "every reply, by an agent that does not delegate": ("agent-math", "_INBOX.>", "", False),
    "the status stream, by an agent": ("agent-math", "agents.status.>", "", False),
}


@pytest.mark.parametrize(
    ("user", "subject", "queue", "no_responder"),
    list(REFUSED_SUBSCRIBE.values()),
    ids=list(REFUSED_SUBSCRIBE),
)
async def test_a_user_cannot_subscribe_outside_its_permissions(
    deploy: DeployCopy, user: str, subject: str, queue: str, no_responder: bool
) -> None:
    async with (
        secure_server(deploy.config("single.conf")) as server,
        logged_in(server.url, deploy, user) as (nc, violations),
        logged_in(server.url, deploy, "orchestrator") as (orchestrator, _),
    ):
        await nc.subscribe(subject, queue=queue)
        await violations.wait_for("subscription", subject)
        if no_responder:  # the refused subscription does not count as interest
            with pytest.raises(nats.errors.NoRespondersError):
                await orchestrator.request(subject, b"{}", timeout=5)


# --- the runtime under these permissions -------------------------------------------------


async def test_a_daemon_serves_its_capability_under_its_agent_user(
    deploy: DeployCopy,
    start_daemon: Callable[..., Daemon],
    procs: Callable[..., Proc],
    callboard_cmd: list[str],
) -> None:
    async with secure_server(deploy.config("single.conf")) as server:
        orchestrator_env = cli_env_for(server.url, deploy, "orchestrator")
        async with (
            logged_in(server.url, deploy, "monitor") as (monitor, monitor_violations),
            watch_status(monitor, "agents") as watch,
        ):
            daemon = await anyio.to_thread.run_sync(
                partial(
                    start_daemon,
                    [{"type": "math", "id": "math", "replicas": 2}],
                    prefix="agents",
                    env=cli_env_for(server.url, deploy, None),
                    heartbeat_interval=0.2,
                    nats={"url": server.url, **deploy.login("agent-math")},  # [nats] in the file
                )
            )
            assert daemon.agent_ids == ["math-1", "math-2"]
            for agent in daemon.agent_ids:
                await watch.wait_state("online", agent=agent)
                await watch.wait_state("heartbeat", agent=agent)

            # discovery is answered (allow_responses), here to the read-only user
            info = json.loads((await monitor.request("$SRV.INFO.math.math-1", b"", timeout=5)).data)
            assert info["id"] == "math-1"
            assert [e["subject"] for e in info["endpoints"]] == ["agents.task.math"]

            follow = procs([*callboard_cmd, "monitor"], env=orchestrator_env, name="monitor")
            await wait_line(follow.stderr, "following")
            result = await cli(
                callboard_cmd, orchestrator_env, ["submit", "math", '{"expression": "6*7"}']
            )
            assert result.returncode == EXIT_OK, result.stderr
            assert json.loads(result.stdout) == {"value": 42}
            await watch.wait_state("completed", capability="math")
            await wait_line(follow.stdout, re.compile(r"\bmath-[12]\s+completed\b"))

            # one replica directly (agents.agent.math.math-2), and a request in plain words
            direct = await cli(
                callboard_cmd,
                orchestrator_env,
                ["submit", "math", '{"expression": "1+2"}', "--agent", "math-2"],
            )
            assert direct.returncode == EXIT_OK, direct.stderr
            assert json.loads(direct.stdout) == {"value": 3}
            asked = await cli(callboard_cmd, orchestrator_env, ["ask", "calculate 6*7"])
            assert asked.returncode == EXIT_OK, asked.stderr
            assert re.fullmatch(r"\[1\] math \(math-[12]\): 42", asked.stdout.strip())
            assert re.search(r"math by math-[12] in", asked.stderr), asked.stderr

            listed = await cli(callboard_cmd, orchestrator_env, ["agents", "--json"])
            assert listed.returncode == EXIT_OK, listed.stderr
            rows = {row["agent"]: row for row in json.loads(listed.stdout)}
            assert set(rows) == {"math-1", "math-2"}
            assert all(row["in_flight"] == 0 for row in rows.values()), rows  # pings answered

            daemon.proc.send_signal(signal.SIGTERM)
            assert await wait_exit(daemon.proc) == 0, daemon.proc.output()
            for agent in daemon.agent_ids:
                await watch.wait_state("offline", agent=agent)
            assert not monitor_violations.messages
    assert violations_in_log(server) == [], "\n".join(violations_in_log(server))
    assert "violation" not in daemon.proc.stderr.text.lower(), daemon.proc.output()
    assert "violation" not in follow.stderr.text.lower(), follow.output()


class Researcher(Agent):
    """Delegates every task to ``math`` after looking the capability up, as LLM agents do."""

    kind = "llm"
    capabilities = ("research",)

    async def handle(self, task: AgentMessage) -> Any:
        found = await self.context.capabilities(wait=0.5)
        assert "math" in {c.name for c in found}, found
        return await self.context.delegate("math", {"expression": "6*7"})


async def test_a_delegating_agent_calls_the_capabilities_its_user_allows(
    deploy: DeployCopy,
) -> None:
    async with (
        secure_server(deploy.config("single.conf")) as server,
        connect(options=options(server.url, deploy, "agent-math")) as math_nc,
        AgentHost(math_nc, [MathAgent("math")]),
        connect(options=options(server.url, deploy, "agent-researcher")) as researcher_nc,
        AgentHost(researcher_nc, [Researcher("researcher")]),
        connect(options=options(server.url, deploy, "orchestrator")) as nc,
    ):
        reply = await TaskClient(nc).request("research", {"question": "6*7?"}, timeout=10)
        assert reply.payload == {"value": 42}
    assert violations_in_log(server) == [], "\n".join(violations_in_log(server))


# --- strangers, TLS ----------------------------------------------------------------------


async def test_a_client_without_credentials_is_refused(
    deploy: DeployCopy, callboard_cmd: list[str]
) -> None:
    async with secure_server(deploy.config("single.conf")) as server:
        for user, password in ((None, None), ("orchestrator", "not-the-password")):
            with pytest.raises(ConnectionFailed, match="refused these credentials"):
                async with connect(options=options(server.url, deploy, user, password=password)):
                    pass
        result = await cli(
            callboard_cmd, cli_env_for(server.url, deploy, None), ["submit", "math", "{}"]
        )
    assert result.returncode == EXIT_CONNECTION, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("callboard submit: could not connect to NATS"), result.stderr
    assert "Authorization Violation" in result.stderr
    assert "--user/--password" in result.stderr


async def test_a_tls_server_refuses_plain_clients_and_takes_the_cli_with_its_ca(
    deploy: DeployCopy, callboard_cmd: list[str]
) -> None:
    async with secure_server(deploy.config("single.conf", tls="tls.conf")) as server:
        # A client that logs in without TLS is cut off before any answer.
        async with await anyio.connect_tcp("127.0.0.1", server.port) as plain:
            info = b""
            with anyio.fail_after(5):
                while not info.endswith(b"\r\n"):
                    info += await plain.receive()
            assert json.loads(info.split(b" ", 1)[1])["tls_required"] is True
            login = deploy.login("orchestrator")
            await plain.send(
                b'CONNECT {"verbose": false, "user": "%s", "pass": "%s"}\r\nPING\r\n'
                % (login["user"].encode(), login["password"].encode())
            )
            with anyio.fail_after(5), pytest.raises(anyio.EndOfStream):
                await plain.receive()

        # callboard's client without the CA: the certificate is not trusted (no hang)
        with pytest.raises(ConnectionFailed, match=r"not trusted.*--tls-ca"):
            async with connect(options=options(server.url, deploy, "orchestrator")):
                pass
        env = cli_env_for(server.url, deploy, "orchestrator")
        result = await cli(callboard_cmd, env, ["agents", "--json", "--tls-ca", str(deploy.ca)])
        assert result.returncode == EXIT_OK, result.stderr
        assert json.loads(result.stdout) == []


async def test_a_mutual_tls_server_wants_a_client_certificate(
    deploy: DeployCopy, callboard_cmd: list[str]
) -> None:
    async with secure_server(deploy.config("single.conf", tls="mtls.conf")) as server:
        env = cli_env_for(server.url, deploy, "orchestrator")
        ca = ["--tls-ca", str(deploy.ca)]
        refused = await cli(callboard_cmd, env, ["agents", "--json", *ca])
        assert refused.returncode == EXIT_CONNECTION, refused.stderr
        assert "requires a client certificate" in refused.stderr
        assert "Traceback" not in refused.stderr

        cert = ["--tls-cert", str(deploy.cert("orchestrator"))]
        key = ["--tls-key", str(deploy.key("orchestrator"))]
        accepted = await cli(callboard_cmd, env, ["agents", "--json", *ca, *cert, *key])
        assert accepted.returncode == EXIT_OK, accepted.stderr
        assert json.loads(accepted.stdout) == []


async def test_a_client_that_asks_for_tls_never_logs_in_without_it(deploy: DeployCopy) -> None:
    # A server (or a man in the middle) that offers no TLS must not get the password.
    async with secure_server(deploy.config("single.conf")) as server:
        with pytest.raises(ConnectionFailed, match="does not offer TLS"):
            async with connect(
                options=options(server.url, deploy, "orchestrator", tls_ca=str(deploy.ca))
            ):
                pass
        async with connect(options=options(server.url, deploy, "orchestrator")):
            pass  # a login, for comparison

        def closed() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = monitoring(server, "connz?state=closed&auth=true")[
                "connections"
            ]
            return found

        await wait_until(lambda: len(closed()) == 2, 10, "showing both closed connections")
        users = sorted(c.get("authorized_user", "") for c in closed())
        assert users == ["", "orchestrator"], closed()


# --- limits --------------------------------------------------------------------------------


async def test_the_configured_max_payload_holds_for_clients_and_at_the_server(
    deploy: DeployCopy,
) -> None:
    match = re.search(r"^max_payload: (\d+)MB$", deploy.config("single.conf").read_text(), re.M)
    assert match, "single.conf should set max_payload in MB"
    limit = int(match.group(1)) * 1024 * 1024
    async with (
        secure_server(deploy.config("single.conf")) as server,
        connect(options=options(server.url, deploy, "orchestrator")) as nc,
    ):
        assert nc.max_payload == limit
        # callboard's client stops a task above it before it reaches the wire ...
        with pytest.raises(PayloadTooLarge):
            await TaskClient(nc).request("math", {"expression": "1" * limit}, timeout=5)
        # ... and the server cuts off a client that sends one anyway.
        async with await anyio.connect_tcp("127.0.0.1", server.port) as raw:
            login = deploy.login("orchestrator")
            await raw.send(
                b'CONNECT {"verbose": false, "user": "%s", "pass": "%s"}\r\n'
                b"PUB agents.task.math %d\r\n%s\r\n"
                % (
                    login["user"].encode(),
                    login["password"].encode(),
                    limit + 1,
                    b"x" * (limit + 1),
                )
            )
            said = b""
            with anyio.fail_after(5):
                try:
                    while b"-ERR" not in said:
                        said += await raw.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    pass
            assert b"Maximum Payload" in said, said[-300:]


# --- the cluster ---------------------------------------------------------------------------


async def test_the_three_node_cluster_carries_a_task_from_node_3_to_an_agent_on_node_1(
    deploy: DeployCopy,
) -> None:
    node_1, node_2, node_3 = (secure_server(c) for c in cluster_configs(deploy))
    async with node_1, node_2, node_3:
        nodes: dict[str, EmbeddedServer] = {
            "callboard-1": node_1,
            "callboard-2": node_2,
            "callboard-3": node_3,
        }
        for name, node in nodes.items():
            others = set(nodes) - {name}
            await wait_until(
                lambda node=node, others=others: route_peers(node) == others,
                20,
                f"{name} routed to {sorted(others)}",
            )
        # the accounts are the same on every node
        with pytest.raises(ConnectionFailed, match="refused these credentials"):
            async with connect(options=options(node_2.url, deploy, "orchestrator", password="x")):
                pass

        async with (
            connect(options=options(node_1.url, deploy, "agent-math")) as agent_nc,
            AgentHost(agent_nc, [MathAgent("math")]),
            connect(options=options(node_3.url, deploy, "orchestrator")) as nc,
        ):

            def node_3_knows_the_agent() -> bool:
                routes = monitoring(node_3, "routez?subs=1").get("routes") or []
                return any(
                    "agents.task.math" in (r.get("subscriptions_list") or []) for r in routes
                )

            await wait_until(node_3_knows_the_agent, 10, "told of the math agent's subscription")
            reply = await TaskClient(nc).request("math", {"expression": "6*7"}, timeout=10)
            assert reply.payload == {"value": 42}
            assert reply.sender == "math"
