"""The orchestrator's memory: RSS per 10,000 tasks in flight, and RSS over a
long run (it must not grow).

Each measurement runs in a fresh requester process (``python -m bench._memory``),
so that memory one measurement allocated and Python kept does not hide the
next one's. The child prints one JSON object per line; the parent collects them.

- ``inflight``: after a warm-up, RSS is read, then ``tasks`` requests are
  started at once against a responder that holds each for ``hold_ms``; once all
  are published (none answered yet) RSS is read again. Done for raw nats-py and
  for callboard, so the difference is callboard's own cost per task in flight.
- ``longrun``: ``tasks`` dispatches from a pool of ``concurrency`` requesters,
  RSS, the count of live container objects and of allocated memory blocks
  (every Python object, strings and bytes too) read after the first 10,000
  and at ten checkpoints after; the growth after the first 10,000 is what
  matters.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import msgspec

from ._callboard import connect_callboard, dispatch_sender, orchestrator
from ._load import Send, drive, echo_payload
from ._procstat import rss_bytes
from ._raw import connect_raw, raw_sender

__all__ = ["run_inflight", "run_longrun"]

ROOT = Path(__file__).resolve().parent.parent
FIRST_CHECKPOINT = 10_000
_WARMUP_TASKS = 1_000


def _emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def _rss() -> int:
    return rss_bytes(os.getpid())


async def _hold_many(send: Send, tasks: int, published: Callable[[], int]) -> dict[str, Any]:
    """Start ``tasks`` requests at once; read RSS once all are out, none back."""
    completed = 0

    async def one() -> None:
        nonlocal completed
        await send()
        completed += 1

    before = published()
    sample: dict[str, Any] = {}
    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(tasks):
            tg.start_soon(one)
        # nats-py has no event for "published": watch its counter
        while published() - before < tasks:  # noqa: ASYNC110
            await anyio.sleep(0.005)
        sample = {
            "rss": _rss(),
            "in_flight": tasks - completed,
            "publish_seconds": time.perf_counter() - started,
        }
    return sample


async def _inflight(args: argparse.Namespace) -> None:
    name = f"bench-memory-{args.mode}"
    payload = echo_payload(args.payload_bytes, delay_ms=args.hold_ms)
    body = msgspec.json.encode(payload)
    if args.mode == "raw":
        async with connect_raw(args.url, name) as nc:
            await _measure_inflight(raw_sender(nc, body), args.tasks, lambda: nc.stats["out_msgs"])
    else:
        async with connect_callboard(args.url, name) as nc, orchestrator(nc) as orch:
            send = dispatch_sender(orch, payload)
            await _measure_inflight(send, args.tasks, lambda: nc.stats["out_msgs"])


async def _measure_inflight(send: Send, tasks: int, published: Callable[[], int]) -> None:
    await _hold_many(send, _WARMUP_TASKS, published)
    gc.collect()
    baseline = _rss()
    sample = await _hold_many(send, tasks, published)
    gc.collect()
    _emit({"baseline_rss": baseline, **sample, "after_rss": _rss(), "tasks": tasks})


def _checkpoints(tasks: int) -> Iterator[int]:
    first = min(FIRST_CHECKPOINT, tasks)
    yield first
    steps = 10
    for index in range(1, steps + 1):
        point = first + (tasks - first) * index // steps
        if point > first:
            yield point


async def _longrun(args: argparse.Namespace) -> None:
    payload = echo_payload(args.payload_bytes)
    async with connect_callboard(args.url, "bench-memory-longrun") as nc, orchestrator(nc) as orch:
        send = dispatch_sender(orch, payload)
        done = errors = 0
        started = time.perf_counter()
        for point in _checkpoints(args.tasks):
            result = await drive(send, args.concurrency, requests=point - done)
            done = point
            errors += result.errors
            _emit(
                {
                    "tasks": done,
                    "rss": _rss(),
                    "objects": len(gc.get_objects()),
                    "allocated_blocks": sys.getallocatedblocks(),
                    "outstanding": len(orch.outstanding),
                    "errors": errors,
                    "seconds": time.perf_counter() - started,
                }
            )


def _run_child(argv: list[str], timeout: float, progress: Callable[[str], None]) -> list[Any]:
    """Run ``python -m bench._memory ARGV``; return the JSON lines it printed."""
    cmd = [sys.executable, "-m", "bench._memory", *argv]
    records = []
    with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None
            deadline = time.monotonic() + timeout
            for line in child.stdout:
                records.append(json.loads(line))
                progress(line.strip())
                if time.monotonic() > deadline:
                    raise TimeoutError(f"memory child {child.pid} ran past {timeout:.0f}s")
            code = child.wait(timeout=max(deadline - time.monotonic(), 1.0))
        except BaseException:
            child.kill()
            child.wait()
            raise
    if code:
        raise RuntimeError(f"memory child {' '.join(argv[:1])} failed with exit code {code}")
    return records


def run_inflight(
    url: str,
    *,
    mode: str,
    tasks: int,
    hold_ms: int,
    payload_bytes: int,
    progress: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """RSS of a fresh requester before and with ``tasks`` requests in flight."""
    argv = ["inflight", "--url", url, "--mode", mode, "--tasks", str(tasks)]
    argv += ["--hold-ms", str(hold_ms), "--payload-bytes", str(payload_bytes)]
    (record,) = _run_child(argv, timeout=120.0, progress=progress)
    result: dict[str, Any] = record
    return result


def run_longrun(
    url: str,
    *,
    tasks: int,
    concurrency: int,
    payload_bytes: int,
    timeout: float,
    progress: Callable[[str], None] = lambda line: None,
) -> list[dict[str, Any]]:
    """RSS checkpoints of a fresh orchestrator process over ``tasks`` dispatches."""
    argv = ["longrun", "--url", url, "--tasks", str(tasks), "--concurrency", str(concurrency)]
    argv += ["--payload-bytes", str(payload_bytes)]
    return _run_child(argv, timeout=timeout, progress=progress)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._memory", description=__doc__)
    parser.add_argument("what", choices=("inflight", "longrun"))
    parser.add_argument("--url", required=True)
    parser.add_argument("--mode", choices=("raw", "callboard"), default="callboard")
    parser.add_argument("--tasks", type=int, required=True)
    parser.add_argument("--hold-ms", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--payload-bytes", type=int, default=256)
    args = parser.parse_args(argv)
    anyio.run(_inflight if args.what == "inflight" else _longrun, args)


if __name__ == "__main__":
    main()
