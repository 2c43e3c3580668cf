"""Durable tasks through real faults (issue 7): agents killed with kill -9, the
submitting process killed and run again, the nats-server restarted, no agent
up at all when the task is submitted.

Every test counts what it sent and what the task bucket holds afterwards, and
prints one line ``submitted=N completed=N lost=N duplicated=N``:

- completed: the task's last record is ``completed`` with the result its
  payload asks for (echo returns the payload);
- lost: submitted but not completed;
- duplicated: a record history with more than one ``completed`` revision,
  i.e. a result overwritten by a second execution.

The histories are complete: the bucket keeps 64 revisions per task, and every
history read here is shorter than that (checked).
"""

from __future__ import annotations

import collections
import json
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from cluster_support import free_ports
from durable_submitter import SETTINGS, payload_of, task_id_of
from nats.aio.client import Client
from nats.js import api
from system_support import ROOT, Daemon, Proc, run_cli, wait_exit, wait_line, watch_status

from bus import CallboardError, EmbeddedServer, connect, new_agent_suffix
from bus.durable import (
    DurableNames,
    DurableTaskClient,
    TaskRecord,
    TaskState,
    decode_record,
    result_of,
)
from orchestrator import Orchestrator

pytestmark = [pytest.mark.system, pytest.mark.anyio]

DURABLE = {
    "storage": SETTINGS.storage,
    "ack_wait": SETTINGS.ack_wait,
    "history": SETTINGS.history,
    "retry_delay": SETTINGS.retry_delay,
}
"""The daemons' ``[durable]`` section: a task whose agent died moves on after 2 s."""
CONNECTION = {"reconnect_wait": 0.2}
"""The daemons' reconnect settings, for the server restart."""
SUBMITTER = Path(__file__).with_name("durable_submitter.py")


# --- counting ------------------------------------------------------------------------------


@dataclass
class Tally:
    """What became of the submitted tasks, from their record histories."""

    submitted: int
    completed: int
    lost: int
    duplicated: int
    redelivered: int
    """Tasks delivered more than once (``attempts`` >= 2)."""
    max_attempts: int
    working: int
    """``working`` revisions over all tasks: one per execution started, and one more
    when a write whose reply was lost (server restart) is made again."""
    problems: list[str]

    def line(self) -> str:
        return (
            f"submitted={self.submitted} completed={self.completed} "
            f"lost={self.lost} duplicated={self.duplicated}"
        )

    def details(self) -> str:
        return (
            f"redelivered={self.redelivered} max_attempts={self.max_attempts} "
            f"working_revisions={self.working}"
        )

    def assert_exactly_once(self) -> None:
        assert self.lost == 0 and self.duplicated == 0, (
            f"{self.line()}; first problems:\n" + "\n".join(self.problems[:20])
        )
        assert self.completed == self.submitted


def tally(expected: Mapping[str, Any], histories: Mapping[str, list[TaskRecord]]) -> Tally:
    """Count ``expected`` (task ID -> the result it must have) against the histories."""
    completed = duplicated = redelivered = max_attempts = working = 0
    problems: list[str] = []
    for task_id, result in expected.items():
        history = histories.get(task_id, [])
        assert len(history) < SETTINGS.history, f"{task_id}: history may be truncated"
        states = [r.state for r in history]
        working += states.count(TaskState.WORKING)
        if states.count(TaskState.COMPLETED) > 1:
            duplicated += 1
            problems.append(f"{task_id}: completed twice: {states}")
        if not history:
            problems.append(f"{task_id}: no record")
            continue
        last = history[-1]
        attempts = max(r.attempts for r in history)
        max_attempts = max(max_attempts, attempts)
        redelivered += attempts >= 2
        if last.state != TaskState.COMPLETED:
            problems.append(f"{task_id}: ended {last.state}: {last}")
        elif result_of(last) != result:
            problems.append(f"{task_id}: wrong result {result_of(last)!r}, expected {result!r}")
        else:
            completed += 1
    return Tally(
        submitted=len(expected),
        completed=completed,
        lost=len(expected) - completed,
        duplicated=duplicated,
        redelivered=redelivered,
        max_attempts=max_attempts,
        working=working,
        problems=problems,
    )


async def bucket_histories(nc: Client, prefix: str) -> dict[str, list[TaskRecord]]:
    """Every kept revision of every task record of ``prefix``, oldest first: one pass
    over the bucket's stream (``TaskStore.history`` costs a consumer per task)."""
    names = DurableNames(prefix)
    js = nc.jetstream(timeout=10)
    stream = f"KV_{names.bucket}"
    key_prefix = f"$KV.{names.bucket}."
    histories: dict[str, list[TaskRecord]] = collections.defaultdict(list)
    info = await js.stream_info(stream)
    if not info.state.messages:
        return histories
    sub = await js.subscribe(
        f"{key_prefix}>", stream=stream, ordered_consumer=True, deliver_policy=api.DeliverPolicy.ALL
    )
    try:
        while True:
            msg = await sub.next_msg(timeout=20)
            if msg.data:  # not a delete or purge marker
                record = decode_record(msg.data)  # a submission, then the record's revisions
                histories[record.task_id].append(record)
            if msg.metadata.num_pending == 0:
                return histories
    finally:
        await sub.unsubscribe()


async def wait_all(
    client: DurableTaskClient, task_ids: list[str], timeout: float, in_parallel: int = 32
) -> None:
    """Wait until every task is done (its record in a final state), within ``timeout``."""
    limiter = anyio.CapacityLimiter(in_parallel)
    deadline = time.monotonic() + timeout

    async def one(task_id: str) -> None:
        async with limiter:
            await client.wait(task_id, max(deadline - time.monotonic(), 0.1))

    async with anyio.create_task_group() as tg:
        for task_id in task_ids:
            tg.start_soon(one, task_id)


def report(test: str, counts: Tally, **extra: Any) -> None:
    more = "".join(f" {k}={v}" for k, v in extra.items())
    print(f"\n[{test}] {counts.line()}  ({counts.details()}{more})")


# --- daemons -------------------------------------------------------------------------------

DISCARDED = "this result is discarded"
"""Logged by an execution that finished after another one had stored the result."""
SKIPPED = "redelivery acknowledged unrun"
"""Logged for a delivery of a task that was already done."""


def log_counts(daemons: list[Daemon]) -> dict[str, int]:
    """Second executions whose result was discarded, and redeliveries not run, as the
    daemons (killed ones included) logged them."""
    lines = [line for daemon in daemons for line in daemon.proc.stderr.lines]
    return {
        "discarded_results": sum(DISCARDED in line for line in lines),
        "skipped_redeliveries": sum(SKIPPED in line for line in lines),
    }


async def start_echo(
    start_daemon: Callable[..., Daemon],
    prefix: str,
    agent_id: str,
    *,
    env: Mapping[str, str] | None = None,
    durable: Mapping[str, Any] = DURABLE,
    **settings: Any,
) -> Daemon:
    """A ``callboard run`` of one durable echo agent with this id (ready when returned)."""
    return await anyio.to_thread.run_sync(
        partial(
            start_daemon,
            [{"type": "echo", "id": agent_id}],
            prefix=prefix,
            env=env,
            durable=dict(durable),
            heartbeat_interval=60.0,
            **settings,
        )
    )


# --- 1. kill -9 of a replica mid-task ------------------------------------------------------


async def test_task_of_a_killed_replica_completes_once_on_the_other(
    start_daemon: Callable[..., Daemon], prefix: str, nc: Client
) -> None:
    """Two replicas run 4 s tasks; the one running more of them is killed with kill -9.
    Its tasks go to the other once ``ack_wait`` passes, and each is completed once."""
    suffix = new_agent_suffix()
    agent_ids = [f"echo-a-{suffix}", f"echo-b-{suffix}"]
    daemons = {agent_id: await start_echo(start_daemon, prefix, agent_id) for agent_id in agent_ids}
    client = DurableTaskClient(nc, prefix=prefix, settings=SETTINGS)
    # 4 s each: longer than ack_wait (2 s), so the survivor's own tasks live on its
    # "in progress" acks while the victim's are handed over once ack_wait passes
    expected = {f"slow-{n}-{suffix}": {"n": n, "delay_ms": 4000} for n in range(8)}
    started: dict[str, str] = {}
    async with watch_status(nc, prefix) as watch:
        for task_id, payload in expected.items():
            await client.submit("echo", payload, task_id=task_id)
        for task_id in expected:
            event = await watch.wait_state("started", task_id=task_id, timeout=30)
            started[task_id] = event["agent"]
        by_agent = collections.Counter(started.values())
        victim = max(agent_ids, key=lambda agent_id: by_agent[agent_id])
        [survivor] = [agent_id for agent_id in agent_ids if agent_id != victim]
        killed_at = time.monotonic()
        await anyio.to_thread.run_sync(daemons[victim].proc.kill)
        with anyio.fail_after(60):
            await wait_all(client, list(expected), timeout=60)
        took = time.monotonic() - killed_at

    histories = {task_id: await client.history(task_id) for task_id in expected}
    counts = tally(expected, histories)
    moved = [task_id for task_id, agent in started.items() if agent == victim]
    report(
        "kill -9 mid-task",
        counts,
        kills=1,
        running_on_victim=len(moved),
        attempts_of_moved=sorted(histories[t][-1].attempts for t in moved),
        all_done_after=f"{took:.1f}s",
    )
    counts.assert_exactly_once()
    assert moved, started
    for task_id in expected:
        history = histories[task_id]
        states = [r.state for r in history]
        assert states.count(TaskState.COMPLETED) == 1, (task_id, states)
        last = history[-1]
        if task_id in moved:
            # redelivered to the other replica, which ran it again and finished it
            assert last.attempts >= 2, history
            assert last.agent == survivor, history
            assert [r.agent for r in history if r.state == TaskState.WORKING][:1] == [victim]
        else:  # kept alive past ack_wait by its "in progress" acks: never handed out again
            assert last.agent == survivor and last.attempts == 1, history
    assert not daemons[victim].proc.alive()
    assert daemons[survivor].proc.alive(), daemons[survivor].proc.output()


# --- 2. 1,000 tasks while replicas are killed and restarted --------------------------------

LOAD_TASKS = 1000
REPLICAS = 3
SUBMIT_BATCH = 25
SUBMIT_PAUSE = 0.25
"""Tasks are submitted 100 a second, so that the kills (one every 0.5-1 s while two
replicas or more are up) fall all over a run of 10 s or more."""
LOAD_TIMEOUT = 120.0


async def test_thousand_tasks_while_replicas_are_killed_and_restarted(
    start_daemon: Callable[..., Daemon], prefix: str, nc: Client
) -> None:
    """Three replicas; every 0.5-1 s one of them is killed with kill -9 and started
    again (a new process with the same agent id). No task is lost, none completed twice.
    ``max_deliver`` is raised to 20: a task may meet several kills in a row."""
    suffix = new_agent_suffix()
    rng = random.Random()
    durable = {**DURABLE, "max_deliver": 20}
    agent_ids = [f"echo-{n}-{suffix}" for n in range(REPLICAS)]
    replicas: dict[str, Daemon | None] = {}
    started_daemons: list[Daemon] = []
    for agent_id in agent_ids:
        daemon = await start_echo(start_daemon, prefix, agent_id, durable=durable)
        replicas[agent_id] = daemon
        started_daemons.append(daemon)
    client = DurableTaskClient(nc, prefix=prefix, settings=SETTINGS)
    expected = {
        f"load-{n:04d}-{suffix}": {"n": n, "delay_ms": rng.randint(0, 50)}
        for n in range(LOAD_TASKS)
    }
    all_done = anyio.Event()
    kills: list[str] = []
    restarts: list[str] = []

    async def restart(agent_id: str) -> None:
        daemon = await start_echo(start_daemon, prefix, agent_id, durable=durable)
        replicas[agent_id] = daemon
        started_daemons.append(daemon)
        restarts.append(agent_id)

    async def killer() -> None:
        async with anyio.create_task_group() as restarting:
            while not all_done.is_set():
                await anyio.sleep(rng.uniform(0.5, 1.0))  # the kill cadence: load shaping
                alive = [a for a, daemon in replicas.items() if daemon is not None]
                if all_done.is_set() or len(alive) < 2:
                    continue  # one replica always serves
                agent_id = rng.choice(alive)
                daemon, replicas[agent_id] = replicas[agent_id], None
                assert daemon is not None
                await anyio.to_thread.run_sync(daemon.proc.kill)
                kills.append(agent_id)
                restarting.start_soon(restart, agent_id)

    started = time.monotonic()
    with anyio.fail_after(LOAD_TIMEOUT + 30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(killer)
            task_ids = list(expected)
            for first in range(0, LOAD_TASKS, SUBMIT_BATCH):
                async with anyio.create_task_group() as submitting:
                    for task_id in task_ids[first : first + SUBMIT_BATCH]:
                        submitting.start_soon(
                            partial(client.submit, "echo", expected[task_id], task_id=task_id)
                        )
                await anyio.sleep(SUBMIT_PAUSE)  # a steady stream of tasks: load shaping
            submitted_after = time.monotonic() - started
            try:
                await wait_all(client, list(expected), timeout=LOAD_TIMEOUT)
            finally:
                all_done.set()
    took = time.monotonic() - started

    counts = tally(expected, await bucket_histories(nc, prefix))
    report(
        f"{LOAD_TASKS} tasks, random kill -9",
        counts,
        kills=len(kills),
        restarts=len(restarts),
        **log_counts(started_daemons),
        submitted_in=f"{submitted_after:.1f}s",
        all_done_in=f"{took:.1f}s",
    )
    counts.assert_exactly_once()
    assert len(kills) >= 3, f"only {len(kills)} kills in {took:.1f}s"
    assert counts.redelivered >= 1, "no kill caught a replica with tasks"


# --- 3. the submitting process killed mid-run and run again ---------------------------------

SUBMITTED_TASKS = 200
KILL_SUBMITTER_AFTER = 40
"""Results the first submitter prints before it is killed."""


def submitter_env(cli_env: Mapping[str, str]) -> dict[str, str]:
    return {**cli_env, "PYTHONPATH": str(ROOT)}


async def test_restarted_submitter_finds_every_result_by_task_id(
    start_daemon: Callable[..., Daemon],
    prefix: str,
    nc: Client,
    nats_url: str,
    cli_env: dict[str, str],
    procs: Callable[..., Proc],
) -> None:
    """The submitting process is killed with kill -9 mid-run (tasks not yet submitted,
    submitted, running and done); run again with the same task IDs, it gets every
    result, and the tasks done before the kill are not run again."""
    suffix = new_agent_suffix()
    for n in (1, 2):
        await start_echo(start_daemon, prefix, f"echo-{n}-{suffix}")
    id_prefix = f"orch-{suffix}"
    args = [sys.executable, str(SUBMITTER), nats_url, prefix, id_prefix, str(SUBMITTED_TASKS)]
    env = submitter_env(cli_env)

    first = procs(args, env=env, name="submitter-1")
    await wait_line(first.stdout, "ready", timeout=30)
    for _ in range(KILL_SUBMITTER_AFTER):
        await wait_line(first.stdout, "result ", timeout=60)
    await anyio.to_thread.run_sync(first.kill)
    first_results = _results(first.stdout.lines)
    client = DurableTaskClient(nc, prefix=prefix, settings=SETTINGS)
    expected = {task_id_of(id_prefix, n): payload_of(n) for n in range(SUBMITTED_TASKS)}
    at_kill = collections.Counter[str]()
    for task_id in expected:
        try:
            at_kill[str((await client.record(task_id)).state)] += 1
        except Exception:
            at_kill["none"] += 1

    second = procs(args, env=env, name="submitter-2")
    assert await wait_exit(second, timeout=120) == 0, second.output()
    assert f"done {SUBMITTED_TASKS}" in second.stdout.lines, second.output()
    second_results = _results(second.stdout.lines)

    counts = tally(expected, await bucket_histories(nc, prefix))
    report(
        "submitter kill -9",
        counts,
        killed_after_results=len(first_results),
        records_at_kill=dict(at_kill),
        second_run_results=len(second_results),
    )
    counts.assert_exactly_once()
    assert len(first_results) >= KILL_SUBMITTER_AFTER
    assert second_results == {task_id: expected[task_id] for task_id in expected}
    assert all(first_results[t] == expected[t] for t in first_results)
    histories = await bucket_histories(nc, prefix)
    for task_id in first_results:
        # done before the kill: the second run found its result and did not run it again
        states = [r.state for r in histories[task_id]]
        assert states.count(TaskState.WORKING) == 1, (task_id, states)


def _results(lines: list[str]) -> dict[str, Any]:
    results = {}
    for line in lines:
        if line.startswith("result "):
            _, task_id, text = line.split(" ", 2)
            results[task_id] = json.loads(text)
    return results


# --- 4. the nats-server restarted mid-run ---------------------------------------------------

RESTART_TASKS = 300
RESTART_IN_FLIGHT = 100
"""Tasks submitted and not yet answered at any time: the submitter is still
submitting when the server dies, and goes on while it is down."""
KILL_SERVER_AFTER = 60
"""Results before the server is killed."""
FAILED_RECONNECTS = 8
"""Failed reconnects a daemon logs before the server is started again (0.2 s apart)."""


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A nats-server of this test's own, on a fixed port with its store under tmp_path,
    so that it can be killed and started again where the clients look for it."""
    [port] = free_ports(1)
    server = EmbeddedServer(port=port, store_dir=str(tmp_path / "jetstream"))
    with server:
        yield server


async def test_every_task_completes_across_a_server_restart(
    own_server: EmbeddedServer,
    start_daemon: Callable[..., Daemon],
    prefix: str,
    cli_env: dict[str, str],
) -> None:
    """The nats-server (file storage) is killed with kill -9 while tasks are submitted
    and running, kept down through failed reconnects, and started again on the same
    port and store. Single-replica file streams hand every write to the OS before
    acknowledging it, so a killed process (unlike a crashed machine) loses none."""
    suffix = new_agent_suffix()
    url = own_server.url
    env = {**cli_env, "NATS_URL": url, "CALLBOARD_LOG_REPEAT_WINDOW": "0"}  # each attempt
    daemons = [
        await start_echo(start_daemon, prefix, f"echo-{n}-{suffix}", env=env, nats=CONNECTION)
        for n in (1, 2)
    ]
    expected = {
        f"rs-{n:04d}-{suffix}": {"n": n, "delay_ms": (n * 13) % 150} for n in range(RESTART_TASKS)
    }
    done = 0
    enough_done = anyio.Event()
    outage_s = 0.0
    unanswered: list[int] = []

    async def outage() -> None:
        nonlocal outage_s
        await enough_done.wait()
        await anyio.to_thread.run_sync(own_server.kill)
        down_at = time.monotonic()
        unanswered.append(len(expected) - done)
        for daemon in daemons:
            await wait_line(daemon.proc.stderr, "disconnected from NATS", timeout=20)
        for _ in range(FAILED_RECONNECTS):  # a real outage, not a blip
            await wait_line(daemons[0].proc.stderr, "NATS connection error", timeout=20)
        await anyio.to_thread.run_sync(own_server.stop)  # reap: the store stays
        await anyio.to_thread.run_sync(own_server.start)
        outage_s = time.monotonic() - down_at
        assert own_server.url == url

    async with connect(
        url, name="restart-submitter", reconnect_wait=CONNECTION["reconnect_wait"]
    ) as nc:
        orch = Orchestrator(nc, prefix=prefix, durable_settings=SETTINGS)

        limiter = anyio.CapacityLimiter(RESTART_IN_FLIGHT)
        failures: dict[str, str] = {}

        async def one(task_id: str, payload: dict[str, Any]) -> None:
            nonlocal done
            async with limiter:
                try:
                    result = await orch.dispatch(
                        "echo", payload, durable=True, task_id=task_id, timeout=120
                    )
                except CallboardError as exc:  # counted below (the record tells)
                    failures[task_id] = repr(exc)
                    return
            assert result == payload
            done += 1
            if done == KILL_SERVER_AFTER:
                enough_done.set()

        started = time.monotonic()
        with anyio.fail_after(180):
            async with anyio.create_task_group() as tg:
                tg.start_soon(outage)
                for task_id, payload in expected.items():
                    tg.start_soon(one, task_id, payload)
        took = time.monotonic() - started
        counts = tally(expected, await bucket_histories(nc, prefix))
    report(
        "nats-server kill -9 + restart",
        counts,
        unanswered_at_kill=unanswered,
        **log_counts(daemons),
        outage=f"{outage_s:.1f}s",
        all_done_in=f"{took:.1f}s",
    )
    counts.assert_exactly_once()
    assert not failures, failures
    for daemon in daemons:
        assert daemon.proc.alive(), daemon.proc.output()


# --- 5. submitted with no agent running ----------------------------------------------------


async def test_task_submitted_with_no_agent_completes_when_one_starts(
    start_daemon: Callable[..., Daemon],
    prefix: str,
    nc: Client,
    cli_env: dict[str, str],
    callboard_cmd: list[str],
    procs: Callable[..., Proc],
) -> None:
    """``submit --durable --no-wait`` with no agent up: the task waits in the stream;
    ``result --wait`` prints it once a daemon has started and run it."""
    suffix = new_agent_suffix()
    task_id = f"early-{suffix}"
    payload = {"hello": "later", "delay_ms": 50}
    submitted = await anyio.to_thread.run_sync(
        partial(
            run_cli,
            callboard_cmd,
            cli_env,
            [
                "submit",
                "--prefix",
                prefix,
                "--durable",
                "--no-wait",
                "--task-id",
                task_id,
                "echo",
                json.dumps(payload),
            ],
        )
    )
    assert submitted.returncode == 0, submitted.stderr
    record = msgspec.json.decode(submitted.stdout)
    assert record["task_id"] == task_id and record["state"] == "submitted", record
    # it waits in the work queue, with nobody to run it
    names = DurableNames(prefix)
    info = await nc.jetstream().stream_info(names.tasks_stream)
    assert info.state.messages == 1, info.state

    waiter = procs(
        [*callboard_cmd, "result", "--prefix", prefix, task_id, "--wait", "--timeout", "60"],
        env=cli_env,
        name="result --wait",
    )
    await start_echo(start_daemon, prefix, f"echo-{suffix}")
    assert await wait_exit(waiter, timeout=60) == 0, waiter.output()
    assert [json.loads(line) for line in waiter.stdout.lines] == [payload]

    client = DurableTaskClient(nc, prefix=prefix, settings=SETTINGS)
    counts = tally({task_id: payload}, {task_id: await client.history(task_id)})
    report("no agent at submit", counts)
    counts.assert_exactly_once()
    assert [r.state for r in await client.history(task_id)] == ["submitted", "working", "completed"]
    status = await anyio.to_thread.run_sync(
        partial(run_cli, callboard_cmd, cli_env, ["status", "--prefix", prefix, task_id])
    )
    assert status.returncode == 0 and "completed" in status.stdout, status
