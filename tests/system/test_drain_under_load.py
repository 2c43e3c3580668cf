"""SIGTERM drains a loaded daemon: every task in flight gets its result, tasks sent
once intake has stopped are refused at once, and the daemon says ``offline`` and exits
0 — also when the signal arrives while its nats-server is down.
"""

from __future__ import annotations

import collections
import re
import signal
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import anyio
import pytest
from cluster_support import NatsNode, running_node
from nats.aio.client import Client
from system_support import Daemon, wait_exit, wait_line, watch_status

from bus import NoAgentError, TaskClient, connect, new_agent_suffix

pytestmark = [pytest.mark.system, pytest.mark.anyio]

IN_FLIGHT = 20
GRACE_PERIOD = 15.0
"""Well above the longest task (1.95 s), so a drain that works answers every task."""
EXIT_BOUND = GRACE_PERIOD + 15.0
"""Seconds a signalled daemon may take to exit: the grace period, the drain of its
connection (5 s by default) and generous slack for a loaded machine."""
INTAKE_STOPPED = re.compile(r"waiting up to \S+s for \d+ task\(s\) in flight")


async def start(start_daemon: Callable[..., Daemon], *args: object, **kw: object) -> Daemon:
    """``start_daemon`` off the event loop (it blocks until the daemon's ready line)."""
    return await anyio.to_thread.run_sync(partial(start_daemon, *args, **kw))


async def test_sigterm_with_20_tasks_in_flight_answers_every_one(
    start_daemon: Callable[..., Daemon], prefix: str, nc: Client
) -> None:
    echo_id = f"echo-{new_agent_suffix()}"
    daemon = await start(
        start_daemon,
        [{"type": "echo", "id": echo_id}],
        prefix=prefix,
        grace_period=GRACE_PERIOD,
        heartbeat_interval=600.0,
    )
    client = TaskClient(nc, prefix=prefix)
    task_ids = [f"drain-{new_agent_suffix()}-{n}" for n in range(IN_FLIGHT)]
    results: dict[str, object] = {}
    late: collections.Counter[str] = collections.Counter()

    async def in_flight(n: int) -> None:
        payload = {"n": n, "delay_ms": 1000 + 50 * n}
        reply = await client.request("echo", payload, task_id=task_ids[n], timeout=30)
        assert reply.payload == payload and reply.sender == echo_id
        results[task_ids[n]] = reply.payload

    async def after_intake_stopped(n: int) -> None:
        # the daemon has stopped taking tasks: nobody listens, so the answer is
        # "no responders" at once, not a wait for the timeout
        try:
            await client.request("echo", {"late": n}, timeout=10)
        except NoAgentError as exc:
            late[type(exc).__name__] += 1
        else:
            late["completed"] += 1

    async with watch_status(nc, prefix) as watch:
        with anyio.fail_after(EXIT_BOUND):
            async with anyio.create_task_group() as tg:
                for n in range(IN_FLIGHT):
                    tg.start_soon(in_flight, n)
                for task_id in task_ids:
                    await watch.wait_state("started", task_id=task_id)
                daemon.proc.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                # logged once every capability subscription is drained, the tasks
                # still running
                await wait_line(daemon.proc.stderr, INTAKE_STOPPED)
                with anyio.fail_after(5):
                    for n in range(5):
                        await after_intake_stopped(n)
            answered = time.monotonic() - signalled
        assert sorted(results) == sorted(task_ids)
        assert late == {"NoAgentError": 5}, late

        offline = await watch.wait_state("offline", agent=echo_id)
        assert offline["reason"] == "shutdown"
        for task_id in task_ids:
            completed = await watch.wait_state("completed", task_id=task_id)
            assert watch.events.index(completed) < watch.events.index(offline)
        assert not [e for e in watch.events if e.get("state") in ("failed", "cancelled")]

    assert await wait_exit(daemon.proc, EXIT_BOUND) == 0, daemon.proc.output()
    assert "SIGTERM: shutting down" in daemon.proc.stderr.text
    print(f"\n{IN_FLIGHT} in flight all answered {answered:.1f}s after SIGTERM; late tasks {late}")


@pytest.fixture
def solo(tmp_path: Path) -> Iterator[NatsNode]:
    with running_node(tmp_path) as node:
        yield node


async def test_sigterm_while_the_server_is_down_still_exits_0(
    solo: NatsNode,
    start_daemon: Callable[..., Daemon],
    prefix: str,
    cli_env: dict[str, str],
) -> None:
    """No server to drain to: the daemon cannot say ``offline``, but it must exit cleanly."""
    daemon = await start(
        start_daemon,
        [{"type": "echo", "id": f"echo-{new_agent_suffix()}"}],
        prefix=prefix,
        env={**cli_env, "NATS_URL": solo.url},
        nats={"reconnect_wait": 0.2},
        grace_period=2.0,
        heartbeat_interval=600.0,
    )
    async with connect(solo.url, name="outage-caller") as nc:
        reply = await TaskClient(nc, prefix=prefix).request("echo", {"ok": 1}, timeout=10)
        assert reply.payload == {"ok": 1}
    await anyio.to_thread.run_sync(solo.kill)
    await wait_line(daemon.proc.stderr, "disconnected from NATS", timeout=10)
    daemon.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    code = await wait_exit(daemon.proc, EXIT_BOUND)  # it does exit, and soon
    print(f"\ndaemon exited {code} {time.monotonic() - signalled:.1f}s after SIGTERM, server down")
    assert "Traceback" not in daemon.proc.stderr.text, daemon.proc.output()
    assert code == 0, daemon.proc.output()
