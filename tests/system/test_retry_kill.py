"""Retries cover a replica killed with kill -9 in the middle of a run."""

from __future__ import annotations

import collections
from collections.abc import Callable
from functools import partial

import anyio
import pytest
from nats.aio.client import Client
from system_support import Daemon

from bus import new_agent_suffix
from orchestrator import Orchestrator, RetryPolicy

pytestmark = [pytest.mark.system, pytest.mark.anyio]

TASKS = 200


async def test_every_task_completes_when_a_replica_is_killed_mid_run(
    start_daemon: Callable[..., Daemon], prefix: str, nc: Client
) -> None:
    suffix = new_agent_suffix()
    daemons = [
        await anyio.to_thread.run_sync(
            partial(start_daemon, [{"type": "echo", "id": f"echo-{n}-{suffix}"}], prefix=prefix)
        )
        for n in (1, 2)
    ]
    doomed = daemons[0]
    # a short per-attempt timeout: tasks in flight on the killed replica time out and are
    # retried (same task id) on the survivor
    orch = Orchestrator(
        nc, prefix=prefix, retry=RetryPolicy(attempts=5, backoff=0.05), default_timeout=1.0
    )
    served: collections.Counter[str] = collections.Counter()
    completed = 0
    half_done = anyio.Event()
    limiter = anyio.CapacityLimiter(20)

    async def one(n: int) -> None:
        nonlocal completed
        async with limiter:
            reply = await orch.request("echo", {"n": n, "delay_ms": 20})
        assert reply.payload == {"n": n, "delay_ms": 20}
        served[reply.sender] += 1
        completed += 1
        if completed == TASKS // 4:
            half_done.set()

    async def killer() -> None:
        await half_done.wait()
        await anyio.to_thread.run_sync(doomed.proc.kill)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(killer)
            for n in range(TASKS):
                tg.start_soon(one, n)
    assert completed == TASKS
    assert not doomed.proc.alive()
    assert len(served) == 2, served  # both served before the kill
    print(f"\n{TASKS} tasks: {dict(served)}, retries {orch.retries}")
