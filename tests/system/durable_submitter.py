"""The submitting process ("the orchestrator") of the durable restart tests.

Dispatches ``COUNT`` durable echo tasks at once with deterministic task IDs and
payloads, through ``Orchestrator.dispatch(durable=True)``, and prints each
result as it arrives. A test kills it with kill -9 in the middle of a run and
then runs it again with the same IDs: the second run must find every result.

Usage::

    python durable_submitter.py URL PREFIX ID_PREFIX COUNT [TIMEOUT]

Prints ``ready`` once connected, ``result TASK_ID JSON`` per task as its
result arrives, and ``done COUNT`` when every task has its result.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio

from bus import connect
from bus.durable import DurableSettings
from orchestrator import Orchestrator

SETTINGS = DurableSettings(storage="file", ack_wait=2.0, history=64, retry_delay=0.2)
"""What the daemons of the durable fault tests run with (used here only if the
streams do not exist yet)."""


def task_id_of(id_prefix: str, n: int) -> str:
    """The task ID of task ``n`` of a run: the same in every run."""
    return f"{id_prefix}-{n:05d}"


def payload_of(n: int) -> dict[str, Any]:
    """The payload of task ``n``: an echo that takes 0-240 ms, the same in every run."""
    return {"n": n, "delay_ms": (n * 37) % 241}


async def main(url: str, prefix: str, id_prefix: str, count: int, timeout: float) -> None:
    async with connect(url, name=f"durable-submitter-{id_prefix}", reconnect_wait=0.2) as nc:
        orch = Orchestrator(nc, prefix=prefix, durable_settings=SETTINGS)
        print("ready", flush=True)

        async def one(n: int) -> None:
            task_id = task_id_of(id_prefix, n)
            result = await orch.dispatch(
                "echo", payload_of(n), durable=True, task_id=task_id, timeout=timeout
            )
            print(f"result {task_id} {json.dumps(result, sort_keys=True)}", flush=True)

        async with anyio.create_task_group() as tg:
            for n in range(count):
                tg.start_soon(one, n)
    print(f"done {count}", flush=True)


if __name__ == "__main__":
    url, prefix, id_prefix, count = sys.argv[1:5]
    timeout = float(sys.argv[5]) if len(sys.argv) > 5 else 120.0
    anyio.run(main, url, prefix, id_prefix, int(count), timeout)
