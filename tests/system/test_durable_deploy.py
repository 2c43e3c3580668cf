"""Durable tasks on the shipped NATS configs (deploy/nats): JetStream is on, and
each role's user may do what durable mode needs of it, and no more.

Every test runs real nats-servers on a copy of deploy/nats with fresh dev
secrets (``gen_dev_secrets.py``, which also writes each server's JetStream
store_dir), and clients that log in as the users of ``accounts.conf``:

- single.conf: ``callboard setup`` as ``setup`` creates the streams with a
  daemon config's settings; ``callboard submit --durable`` as ``orchestrator``
  queues a task before any agent runs; a daemon logged in as ``agents`` with a
  ``[durable]`` section serves it; ``result``, ``status`` and ``history`` find it as
  ``orchestrator``; ``monitor`` replays its events with ``--since`` (also past a
  flow-control window) and may not submit one; a daemon logged in as
  ``agent-math`` (no ``_INBOX.>``) cannot serve durable tasks; no other
  permission violation is logged on the way.
- cluster/: the three nodes form a JetStream cluster; a daemon with ``replicas
  = 3`` gets every stream on all three nodes, and its tasks all complete, each
  exactly once, while the work queue's leader node is killed with SIGKILL in the
  middle of the run.
"""

from __future__ import annotations

import collections
import json
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import nats.errors
import pytest
from nats_security_support import (
    DeployCopy,
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
from system_support import Daemon, Proc, wait_exit, watch_status
from system_support import run_cli_async as cli

from bus import ConnectOptions, EmbeddedServer, connect, new_task_id
from bus.durable import (
    DurableNames,
    DurableSettings,
    DurableTaskClient,
    TaskRecord,
    TaskState,
    ensure_durable,
    replay_status,
)
from orchestrator.cli import EXIT_NO_AGENT, EXIT_OK
from orchestrator.cli._exit_codes import EXIT_PERMISSION

pytestmark = [pytest.mark.system, pytest.mark.anyio]

NAMES = DurableNames("agents")
"""accounts.conf names the default prefix's subjects and streams."""
STREAMS = {NAMES.tasks_stream, NAMES.dead_stream, NAMES.status_stream, f"KV_{NAMES.bucket}"}
STREAMS_IN_ORDER = [
    NAMES.tasks_stream,
    NAMES.dead_stream,
    f"KV_{NAMES.bucket}",
    NAMES.status_stream,
]
JETSTREAM_TIMEOUT = 20.0
"""Seconds a cluster may take to elect its JetStream meta leader."""
RESULT_TTL = 3600
"""The daemon config's result_ttl: not the default, so the setup step sets the bucket's."""


@pytest.fixture(scope="module")
def deploy(tmp_path_factory: pytest.TempPathFactory) -> DeployCopy:
    """deploy/nats copied, with secrets and store dirs from its generator (once: bcrypt)."""
    return make_deploy_copy(tmp_path_factory.mktemp("deploy-nats"))


@pytest.fixture
def single(deploy: DeployCopy) -> DeployCopy:
    """The copy, with the store of single.conf's server emptied: each test starts
    with no streams (the store_dir is the copy's, shared by the module's tests)."""
    shutil.rmtree(deploy.root / "jetstream" / "single", ignore_errors=True)
    return deploy


def options(urls: Sequence[str], deploy: DeployCopy, user: str) -> ConnectOptions:
    """Options that ignore the environment: these servers, this user (and the
    inbox prefix of its own that accounts.conf gives the `agents` user)."""
    return ConnectOptions(
        servers=tuple(urls),
        connect_attempts=1,
        reconnect_wait=0.2,
        inbox_prefix=deploy.env(user).get("NATS_INBOX_PREFIX"),
        **deploy.login(user),
    )


async def set_up(deploy: DeployCopy, urls: Sequence[str], settings: DurableSettings) -> None:
    """The setup step, as the ``setup`` user: create the streams with ``settings``."""
    async with connect(options=options(urls, deploy, "setup")) as nc:
        await ensure_durable(nc.jetstream(timeout=10), NAMES, settings, update=True)


def violations(*servers: EmbeddedServer) -> list[str]:
    return [line for server in servers for line in violations_in_log(server)]


# --- one node ------------------------------------------------------------------------------


async def test_durable_tasks_run_under_the_roles_users_on_one_node(
    single: DeployCopy,
    start_daemon: Callable[..., Daemon],
    callboard_cmd: list[str],
) -> None:
    deploy = single
    async with secure_server(deploy.config("single.conf")) as server:
        assert any("Starting JetStream" in line for line in server.log_lines)
        # the setup step applies the [durable] section of the daemon's config
        config = deploy.root / "daemon.toml"
        config.write_text(
            f'prefix = "agents"\n[durable]\nresult_ttl = {RESULT_TTL}\n[[agents]]\ntype = "math"\n'
        )
        setup = cli_env_for(server.url, deploy, "setup")
        made = await cli(callboard_cmd, setup, ["setup", str(config)])
        assert made.returncode == EXIT_OK, made.stderr
        assert made.stdout.splitlines() == [f"{stream}: created" for stream in STREAMS_IN_ORDER]
        orchestrator = cli_env_for(server.url, deploy, "orchestrator")
        # no daemon yet: the task waits in the queue
        task_id = new_task_id()
        six_times_seven = ["math", '{"expression": "6*7"}', "--task-id", task_id]
        queued = await cli(
            callboard_cmd, orchestrator, ["submit", *six_times_seven, "--durable", "--no-wait"]
        )
        assert queued.returncode == EXIT_OK, queued.stderr
        assert json.loads(queued.stdout)["state"] == "submitted"
        # said at once, under the orchestrator's permissions (CONSUMER.INFO, read-only)
        assert "no agent serves durable tasks of 'math' yet" in queued.stderr, queued.stderr
        # the streams are files in the store_dir that gen_dev_secrets.py chose
        store = deploy.root / "jetstream" / "single" / "jetstream" / "CALLBOARD" / "streams"
        assert {path.name for path in store.iterdir()} == STREAMS

        daemon = await anyio.to_thread.run_sync(
            partial(
                start_daemon,
                [{"type": "math", "id": "math"}, {"type": "echo", "id": "echo-1"}],
                prefix="agents",
                env=cli_env_for(server.url, deploy, None),
                heartbeat_interval=60.0,
                nats={"url": server.url, "inbox_prefix": "_INBOX_agents", **deploy.login("agents")},
                durable={"storage": "file", "result_ttl": RESULT_TTL},
            )
        )
        # the setup step gave the bucket the config's settings
        kv = monitoring(server, "jsz?accounts=true&streams=true&config=true")
        (bucket,) = (
            stream
            for account in kv["account_details"]
            for stream in account["stream_detail"]
            if stream["name"] == f"KV_{NAMES.bucket}"
        )
        assert bucket["config"]["max_age"] == RESULT_TTL * 1_000_000_000

        result = await cli(callboard_cmd, orchestrator, ["result", task_id, "--wait"])
        assert (result.returncode, result.stdout) == (EXIT_OK, '{"value":42}\n'), result.stderr
        submitted = await cli(
            callboard_cmd,
            orchestrator,
            ["submit", "echo", '{"hi": 1}', "--durable"],  # and one that waits
        )
        assert (submitted.returncode, submitted.stdout) == (EXIT_OK, '{"hi":1}\n'), submitted.stderr
        status = await cli(callboard_cmd, orchestrator, ["status", task_id, "--json"])
        assert status.returncode == EXIT_OK, status.stderr
        record = json.loads(status.stdout)
        assert (record["state"], record["agent"], record["result"]) == (
            "completed",
            "math",
            {"value": 42},
        )
        # the record's revisions and the status events kept for the task
        history = await cli(callboard_cmd, orchestrator, ["history", task_id])
        assert history.returncode == EXIT_OK, history.stderr
        kinds = collections.Counter(line.split()[0] for line in history.stdout.splitlines())
        assert kinds["record"] == 3 and kinds["event"] >= 2, history.stdout

        # the monitor replays the status stream: the task completed before it started
        monitor = cli_env_for(server.url, deploy, "monitor")
        replay = await cli(
            callboard_cmd,
            monitor,
            ["monitor", "--since", "1m", "--json", "--state", "completed", "--count", "1"],
        )
        assert replay.returncode == EXIT_OK, replay.stderr
        event = json.loads(replay.stdout)
        assert (event["task_id"], event["agent"]) == (task_id, "math")
        assert violations(server) == [], "\n".join(violations(server))

        # ... and may not submit a durable task: its first JetStream request is refused
        refused_id = new_task_id()
        started = time.monotonic()
        refused = await cli(
            callboard_cmd,
            monitor,
            ["submit", "math", '{"expression": "1+1"}', "--durable", "--task-id", refused_id],
        )
        took = time.monotonic() - started
        print(f"monitor's durable submit: exit {refused.returncode} after {took:.1f}s")
        print(refused.stderr)
        assert refused.returncode != EXIT_OK, refused.stdout
        assert "Traceback" not in refused.stderr
        # the server's refusal, named (the client then gives up on its unanswered request)
        refusal = "publish to '$js.api.stream.info.agents_tasks' (permissions violation)"
        assert refusal in refused.stderr.lower(), refused.stderr
        assert refused.returncode == EXIT_PERMISSION, refused.stderr
        unknown = await cli(callboard_cmd, orchestrator, ["status", refused_id])
        assert unknown.returncode == EXIT_NO_AGENT, unknown.stderr
        assert f"no record of task {refused_id}" in unknown.stderr
        logged = violations(server)
        assert logged and all("monitor" in line for line in logged), "\n".join(logged)
        assert all("$JS.API.STREAM.INFO." in line for line in logged), "\n".join(logged)

        daemon.proc.stop()
    assert "violation" not in daemon.proc.stderr.text.lower(), daemon.proc.output()


async def test_an_agent_user_without_the_inbox_cannot_serve_durable_tasks(
    single: DeployCopy,
    procs: Callable[..., Proc],
    tmp_path: Path,
    callboard_cmd: list[str],
) -> None:
    """agent-math serves core tasks only (accounts.conf: no ``_INBOX.>``); a daemon
    that logs in as it with ``[durable]`` stops at start-up, and says why."""
    deploy = single
    async with secure_server(deploy.config("single.conf")) as server:
        config = tmp_path / "daemon.toml"
        config.write_text(
            'prefix = "agents"\n[durable]\n[nats]\n'
            f'url = "{server.url}"\nuser = "agent-math"\n'
            f'password = "{deploy.passwords["agent-math"]}"\n'
            '[[agents]]\ntype = "math"\nid = "math"\n'
        )
        daemon = procs(
            [*callboard_cmd, "run", str(config)], env=cli_env_for(server.url, deploy, None)
        )
        code = await wait_exit(daemon, timeout=30)
        said = daemon.stderr.text.lower()
        assert code != 0, daemon.output()
        assert 'permissions violation for subscription to "_inbox.' in said, daemon.output()


EVENTS = 16
EVENT_PAD = 500_000
"""16 events of 500 kB: several times the bytes after which the server waits for
a flow-control answer (a replay without one stops after about 2.5 MB)."""


async def test_the_monitor_replays_more_than_a_flow_control_window(single: DeployCopy) -> None:
    """A replay is an ordered consumer with flow control: past a window of bytes the
    server sends the rest only once the client has answered on $JS.FC..., which the
    monitor may publish to (accounts.conf)."""
    deploy = single
    async with secure_server(deploy.config("single.conf")) as server:
        await set_up(deploy, [server.url], DurableSettings())
        async with logged_in(server.url, deploy, "agents") as (agent, _):
            js = agent.jetstream()
            for n in range(EVENTS):
                event = {"state": "heartbeat", "agent": "math", "n": n, "pad": "x" * EVENT_PAD}
                ack = await js.publish("agents.status.math.heartbeat", json.dumps(event).encode())
                assert ack.stream == NAMES.status_stream  # stored: the replay will find it
        async with logged_in(server.url, deploy, "monitor") as (monitor, told):
            replayed = []
            with anyio.fail_after(20):
                async for msg in replay_status(
                    monitor.jetstream(), NAMES, "agents.status.>", since=None, follow=False
                ):
                    replayed.append(json.loads(msg.data)["n"])
        assert replayed == list(range(EVENTS))
        assert told.messages == [] and told.other_errors == []
    assert violations(server) == [], "\n".join(violations(server))


# --- the cluster ---------------------------------------------------------------------------


TASKS = 200
CONCURRENCY = 16
TASK_MS = 50
KILL_AFTER = 40
"""Tasks completed before a node is killed."""
DURABLE_R3 = {"storage": "file", "replicas": 3, "ack_wait": 2, "retry_delay": 0.1}
"""A task whose acknowledgement was lost with the killed node moves on after 2 s."""
RUN_BOUND = 60.0
"""Seconds every task may take to complete, the kill included."""
HISTORY_BOUND = 30.0
"""Seconds a task's history may take to read after the kill."""


def jetstream_leader(server: EmbeddedServer) -> str | None:
    """The node's view of the JetStream meta leader (None while there is none)."""
    leader: str | None = (monitoring(server, "jsz").get("meta_cluster") or {}).get("leader")
    return leader


def stream_replicas(server: EmbeddedServer) -> dict[str, tuple[int, str, list[str]]]:
    """Stream → (configured replicas, leader, replicas' names), from the node's /jsz."""
    data = monitoring(server, "jsz?accounts=true&streams=true&config=true")
    found = {}
    for account in data.get("account_details") or []:
        for stream in account.get("stream_detail") or []:
            cluster = stream.get("cluster") or {}
            peers = [r["name"] for r in cluster.get("replicas") or []]
            found[stream["name"]] = (
                stream["config"]["num_replicas"],
                cluster.get("leader", ""),
                peers,
            )
    return found


async def history(client: DurableTaskClient, task_id: str) -> list[TaskRecord]:
    """The task's record revisions, asked for again if JetStream does not answer in
    time: for some seconds after the kill, until the cluster counts the killed node
    as offline, a read may still be routed to it (nats-py's key watcher, say, is an
    ephemeral consumer, which the meta leader may place on the killed node)."""
    with anyio.fail_after(HISTORY_BOUND):
        while True:
            try:
                return await client.history(task_id)
            except nats.errors.TimeoutError:
                continue


def client_node(nodes: Mapping[str, EmbeddedServer], user: str) -> set[str]:
    """The nodes on which ``user`` has a connection."""
    return {
        name
        for name, node in nodes.items()
        for c in monitoring(node, "connz?auth=true").get("connections") or []
        if c.get("authorized_user") == user
    }


async def test_durable_tasks_survive_a_cluster_node_killed_mid_run(
    deploy: DeployCopy,
    start_daemon: Callable[..., Daemon],
) -> None:
    node_1, node_2, node_3 = (secure_server(c) for c in cluster_configs(deploy))
    async with node_1, node_2, node_3:
        nodes = {"callboard-1": node_1, "callboard-2": node_2, "callboard-3": node_3}
        for name, node in nodes.items():
            others = set(nodes) - {name}
            await wait_until(
                lambda node=node, others=others: route_peers(node) == others,
                20,
                f"{name} routed to {sorted(others)}",
            )
        for name, node in nodes.items():
            await wait_until(
                lambda node=node: jetstream_leader(node) in nodes,
                JETSTREAM_TIMEOUT,
                f"{name} seeing a JetStream meta leader",
            )
        urls = [node.url for node in nodes.values()]
        await set_up(deploy, urls, DurableSettings(**DURABLE_R3))
        daemon = await anyio.to_thread.run_sync(
            partial(
                start_daemon,
                [{"type": "echo", "id": "echo-1", "max_concurrency": CONCURRENCY}],
                prefix="agents",
                env=cli_env_for(",".join(urls), deploy, None),
                heartbeat_interval=60.0,
                nats={
                    "url": ",".join(urls),
                    "reconnect_wait": 0.2,
                    "inbox_prefix": "_INBOX_agents",
                    **deploy.login("agents"),
                },
                durable=DURABLE_R3,
            )
        )
        streams = stream_replicas(node_1)
        assert {name: r for name, (r, _, _) in streams.items() if name in STREAMS} == dict.fromkeys(
            STREAMS, 3
        ), streams

        async with (
            connect(options=options(urls, deploy, "orchestrator")) as nc,
            watch_status(nc, "agents") as watch,
        ):
            client = DurableTaskClient(nc, prefix="agents", sender="test")
            ids = [f"r3-{n}-{new_task_id()}" for n in range(TASKS)]
            payloads = {task_id: {"task": task_id, "delay_ms": TASK_MS} for task_id in ids}
            started = time.monotonic()
            async with anyio.create_task_group() as tg:
                for task_id in ids:
                    tg.start_soon(
                        partial(client.submit, "echo", payloads[task_id], task_id=task_id)
                    )
            completed: list[str] = []

            def enough_done(event: dict[str, Any]) -> bool:  # sees each event once
                if event.get("state") == "completed":
                    completed.append(event["task_id"])
                return len(completed) >= KILL_AFTER

            await watch.wait_for(enough_done, timeout=RUN_BOUND)

            # the work queue's leader: JetStream must elect another one, and the
            # clients on that node, if any, must move to another (they know all three)
            assert nc.connected_url is not None
            in_use = client_node(nodes, "agents") | {
                name for name, node in nodes.items() if node.port == nc.connected_url.port
            }
            victim = stream_replicas(node_1)[NAMES.tasks_stream][1]
            assert victim in nodes, stream_replicas(node_1)
            nodes[victim].kill()
            killed_at = time.monotonic() - started

            records = {}
            with anyio.fail_after(RUN_BOUND):
                async with anyio.create_task_group() as tg:

                    async def wait(task_id: str) -> None:
                        records[task_id] = await client.wait(task_id, RUN_BOUND)

                    for task_id in ids:
                        tg.start_soon(wait, task_id)
            took = time.monotonic() - started

            done = [t for t, r in records.items() if r.state == TaskState.COMPLETED]
            wrong = [t for t in done if json.loads(bytes(records[t].result)) != payloads[t]]
            runs = collections.Counter[str]()
            for task_id in ids:
                for revision in await history(client, task_id):
                    if revision.state == TaskState.COMPLETED:
                        runs[task_id] += 1
            duplicated = [t for t, n in runs.items() if n > 1]
            unrecorded = [t for t in done if runs[t] == 0]  # the history must show each run
            redelivered = sum(1 for r in records.values() if r.attempts > 1)
        print(
            f"killed {victim} (the work queue's leader; clients on {sorted(in_use)}) "
            f"{killed_at:.1f}s in, after {KILL_AFTER} tasks; submitted={TASKS} "
            f"completed={len(done)} lost={TASKS - len(done)} duplicated={len(duplicated)} "
            f"redelivered={redelivered} in {took:.1f}s"
        )
        assert len(done) == TASKS, {t: r.state for t, r in records.items() if t not in done}
        assert not wrong, wrong[:5]
        assert not duplicated, duplicated[:5]
        assert not unrecorded, unrecorded[:5]
        survivors = [node for name, node in nodes.items() if name != victim]
        assert violations(*survivors) == [], "\n".join(violations(*survivors))
        daemon.proc.stop()
    assert "violation" not in daemon.proc.stderr.text.lower(), daemon.proc.output()
