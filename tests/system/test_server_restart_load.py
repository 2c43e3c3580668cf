"""A daemon rides out a kill -9 of its nats-server under load, without being restarted.

One nats-server on fixed free ports (so that it can come back where the clients
look for it), a ``callboard run`` daemon and a caller both connected to it. The
server is killed with SIGKILL while tasks flow, left down through several failed
reconnect attempts, and started again with the same arguments.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from cluster_support import NatsNode, retried_tasks, retry_reasons, run_load, running_node
from system_support import Daemon, LineReader, wait_line, watch_status

from bus import CallboardError, TaskClient, connect, new_agent_suffix
from orchestrator import Orchestrator, RetryPolicy

pytestmark = [pytest.mark.system, pytest.mark.anyio]

TASKS = 600
IN_FLIGHT = 32
KILL_AFTER = 150
"""Completed tasks before the server is killed."""
FAILED_RECONNECTS = 4
"""Failed reconnect attempts the daemon logs before the server is started again:
a real outage, not a blip (about a second at ``reconnect_wait = 0.2``)."""
SERVE_AGAIN_BOUND = 20.0
"""Seconds after the restart by which the daemon must have reconnected."""
ATTEMPT_TIMEOUT = 2.0
RETRY = RetryPolicy(attempts=10, backoff=0.2, multiplier=2.0, max_backoff=2.0)
"""Retries timeouts, 503 and no-responders; the backoffs span ~13 s, well over the
outage and the reconnects of both clients."""
TASK_BOUND = RETRY.attempts * (ATTEMPT_TIMEOUT + RETRY.max_backoff * 1.5) + 10.0
"""Seconds after which a task counts as hung."""
CONNECTION = {"reconnect_wait": 0.2}
"""The daemon's and the caller's reconnect settings: both retry every 0.2 s."""


@pytest.fixture
def solo(tmp_path: Path) -> Iterator[NatsNode]:
    with running_node(tmp_path) as node:
        yield node


async def start_echo_daemon(
    start_daemon: Callable[..., Daemon], node: NatsNode, prefix: str, env: dict[str, str], **kw: Any
) -> Daemon:
    return await anyio.to_thread.run_sync(
        partial(
            start_daemon,
            [{"type": "echo", "id": f"echo-{new_agent_suffix()}", "replicas": 2}],
            prefix=prefix,
            env={**env, "NATS_URL": node.url, "CALLBOARD_LOG_REPEAT_WINDOW": "0"},  # each attempt
            nats=CONNECTION,
            heartbeat_interval=600.0,
            **kw,
        )
    )


async def outage(node: NatsNode, daemon_log: LineReader) -> float:
    """Kill -9 the server, keep it down through failed reconnects, start it again.

    Returns:
        ``time.monotonic()`` when the server was ready again.
    """
    await anyio.to_thread.run_sync(node.kill)
    await wait_line(daemon_log, "disconnected from NATS", timeout=10)
    for _ in range(FAILED_RECONNECTS):
        await wait_line(daemon_log, "NATS connection error", timeout=10)
    await anyio.to_thread.run_sync(node.start)
    return time.monotonic()


async def test_daemon_serves_again_after_its_server_is_killed_under_load(
    solo: NatsNode,
    start_daemon: Callable[..., Daemon],
    prefix: str,
    cli_env: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="callboard.orchestrator")
    daemon = await start_echo_daemon(start_daemon, solo, prefix, cli_env)
    pid = daemon.pid
    enough_done = anyio.Event()
    restarted_at = served_again_after = 0.0

    async def kill_and_restart() -> None:
        nonlocal restarted_at, served_again_after
        await enough_done.wait()
        restarted_at = await outage(solo, daemon.proc.stderr)
        await wait_line(daemon.proc.stderr, "reconnected to NATS", timeout=SERVE_AGAIN_BOUND)
        served_again_after = time.monotonic() - restarted_at

    async with connect(solo.url, name="restart-caller", **CONNECTION) as nc:
        orch = Orchestrator(nc, prefix=prefix, retry=RETRY, default_timeout=ATTEMPT_TIMEOUT)
        with anyio.fail_after(TASK_BOUND * 3):
            async with anyio.create_task_group() as tg:
                tg.start_soon(kill_and_restart)
                outcomes = await run_load(
                    orch,
                    tasks=TASKS,
                    in_flight=IN_FLIGHT,
                    task_bound=TASK_BOUND,
                    label=f"rs-{new_agent_suffix()}",
                    milestone=KILL_AFTER,
                    reached=enough_done,
                    delay_ms=10,
                )

        # after the restart, with no retry at all: every task is served
        client = TaskClient(nc, prefix=prefix, default_timeout=10)
        with anyio.fail_after(30):
            after = [await client.request("echo", {"after": n}) for n in range(50)]
        assert [reply.payload for reply in after] == [{"after": n} for n in range(50)]

    retried = retried_tasks(caplog.records)
    print(
        f"\n{TASKS} tasks, server killed after {KILL_AFTER}: {outcomes.summary(retried)}; "
        f"retries {dict(retry_reasons(caplog.records))}; "
        f"daemon reconnected {served_again_after:.2f}s after the restart"
    )
    assert daemon.proc.alive() and daemon.pid == pid, daemon.proc.output()
    assert served_again_after < SERVE_AGAIN_BOUND
    outcomes.assert_every_task_ended()
    # the retry budget spans the outage many times over: every task completes
    assert len(outcomes.completed) == TASKS, outcomes.summary(retried)


async def test_task_accepted_before_the_restart_is_answered_after_it(
    solo: NatsNode,
    start_daemon: Callable[..., Daemon],
    prefix: str,
    cli_env: dict[str, str],
) -> None:
    """Running when the server dies: the agent finishes it after reconnecting and its
    reply reaches the caller (whose own connection came back first) on the first attempt."""
    daemon = await start_echo_daemon(start_daemon, solo, prefix, cli_env)
    task_id = f"span-{new_agent_suffix()}"
    payload = {"task": task_id, "delay_ms": 4000}
    async with (
        connect(solo.url, name="span-caller", **CONNECTION) as nc,
        watch_status(nc, prefix) as watch,  # still subscribed when the completed event comes
    ):
        replies = []
        async with anyio.create_task_group() as tg:

            async def send() -> None:
                client = TaskClient(nc, prefix=prefix)
                replies.append(await client.request("echo", payload, task_id=task_id, timeout=20))

            tg.start_soon(send)
            await watch.wait_state("started", task_id=task_id)
            await outage(solo, daemon.proc.stderr)
            await wait_line(daemon.proc.stderr, "reconnected to NATS", timeout=SERVE_AGAIN_BOUND)
        [reply] = replies
        assert reply.payload == payload and reply.task_id == task_id
        completed = await watch.wait_state("completed", task_id=task_id)
        assert completed["agent"] == reply.sender
        assert [e["state"] for e in watch.events if e.get("task_id") == task_id][-1] == (
            "completed"
        )


async def test_task_finished_during_the_outage_still_gets_its_result(
    solo: NatsNode,
    start_daemon: Callable[..., Daemon],
    prefix: str,
    cli_env: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Finished while the server is down: the reply waits in the agent's reconnect buffer
    and goes out when the agent reconnects. It reaches the caller only if the caller's
    inbox is back on the server by then (a race between two reconnects); if not, the
    caller's retry (same task id) runs it again. Either way the caller gets its result;
    the test prints which way it went (the load test above exercises the retry way)."""
    caplog.set_level(logging.INFO, logger="callboard.orchestrator")
    daemon = await start_echo_daemon(start_daemon, solo, prefix, cli_env)
    task_id = f"gap-{new_agent_suffix()}"
    payload = {"task": task_id, "delay_ms": 300}
    async with connect(solo.url, name="gap-caller", **CONNECTION) as nc:
        orch = Orchestrator(
            nc, prefix=prefix, retry=RetryPolicy(attempts=4, backoff=0.2), default_timeout=4.0
        )
        async with watch_status(nc, prefix) as watch, anyio.create_task_group() as tg:
            replies = []

            async def send() -> None:
                replies.append(await orch.request("echo", payload, task_id=task_id))

            tg.start_soon(send)
            await watch.wait_state("started", task_id=task_id)
            # down for more than 4 reconnect waits (0.8 s): the 300 ms task ends in the gap
            await outage(solo, daemon.proc.stderr)
        [reply] = replies
        assert reply.payload == payload and reply.task_id == task_id
        runs = [e for e in watch.events if e.get("task_id") == task_id]
    print(
        f"\nfinished during the outage: answered after {orch.retries} retries; "
        f"events seen by the caller: {[e['state'] for e in runs]}"
    )


class LogSignal(logging.Handler):
    """Sets ``event`` when a record containing ``text`` is logged (from the event loop)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.event = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


async def test_tasks_beyond_the_reconnect_buffer_fail_typed(solo: NatsNode, prefix: str) -> None:
    """While disconnected, nats-py buffers what a caller publishes (2 MB by default); a
    task that no longer fits is refused at once, and like every callboard failure that
    must be a typed ``CallboardError``, not a nats-py exception."""
    bus_log = logging.getLogger("callboard.bus")
    disconnected, reconnected = LogSignal("disconnected from NATS"), LogSignal("reconnected")
    for handler in (disconnected, reconnected):
        bus_log.addHandler(handler)
    outcomes: collections.Counter[str] = collections.Counter()
    try:
        async with connect(solo.url, name="buffer-caller", **CONNECTION) as nc:
            client = TaskClient(nc, prefix=prefix)
            await anyio.to_thread.run_sync(solo.kill)
            with anyio.fail_after(10):
                await disconnected.event.wait()

            async def big_task(n: int) -> None:
                try:
                    await client.request("echo", {"n": n, "blob": "x" * 900_000}, timeout=2)
                except CallboardError as exc:
                    outcomes[type(exc).__name__] += 1

            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    for n in range(4):
                        tg.start_soon(big_task, n)
                # the server back before the block ends, so the connection closes cleanly
                await anyio.to_thread.run_sync(solo.start)
                await reconnected.event.wait()
    finally:
        for handler in (disconnected, reconnected):
            bus_log.removeHandler(handler)
    print(f"\n4 tasks of 900 kB during an outage: {dict(outcomes)}")
    assert sum(outcomes.values()) == 4, outcomes
    assert outcomes["ConnectionFailed"] >= 1, outcomes
    assert set(outcomes) <= {"ConnectionFailed", "TaskTimeout"}, outcomes
