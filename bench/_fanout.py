"""A fan-out pipeline of independent steps against as many concurrent raw requests.

callboard: ``Orchestrator.run_pipeline`` of ``steps`` independent echo steps
with ``max_concurrency=steps`` (all of them in flight at once). Raw: ``steps``
``nc.request`` calls started together in one task group. Here a task per
request is what both do: that is what "1,000 concurrent requests" means.
Rounds alternate, and the ratio is the median of callboard's time over raw's.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any

import anyio
from nats.aio.client import Client

from orchestrator import Orchestrator

from ._callboard import CAPABILITY
from ._raw import RAW_SUBJECT, REQUEST_TIMEOUT
from ._stats import median

__all__ = ["FanoutResult", "fanout"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class FanoutResult:
    """Wall-clock seconds of each round, and callboard's time over raw's.

    Attributes:
        steps: steps in the pipeline (and raw requests per round).
        raw: seconds per raw round.
        callboard: seconds per pipeline round.
        ratio: the median per-pair ratio callboard / raw (above 1 is slower).
    """

    steps: int
    raw: list[float]
    callboard: list[float]
    ratio: float


async def _raw_round(nc: Client, body: bytes, steps: int) -> float:
    request = functools.partial(nc.request, RAW_SUBJECT, body, timeout=REQUEST_TIMEOUT)
    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(steps):
            tg.start_soon(request)
    return time.perf_counter() - started


async def _pipeline_round(orch: Orchestrator, payload: Any, steps: int) -> float:
    pipeline = [{"capability": CAPABILITY, "payload": payload} for _ in range(steps)]
    started = time.perf_counter()
    results = await orch.run_pipeline(pipeline, max_concurrency=steps)
    elapsed = time.perf_counter() - started
    failed = [r for r in results if not r.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} pipeline step(s) failed, the first: {failed[0]}")
    return elapsed


async def fanout(
    nc: Client,
    orch: Orchestrator,
    *,
    payload: Any,
    body: bytes,
    steps: int,
    rounds: int,
    progress: Callable[[str], None] = lambda line: None,
) -> FanoutResult:
    """Alternate raw and pipeline rounds (after one warm-up of each)."""
    await _raw_round(nc, body, steps)
    await _pipeline_round(orch, payload, steps)
    raw: list[float] = []
    callboard: list[float] = []
    for index in range(rounds):
        raw.append(await _raw_round(nc, body, steps))
        callboard.append(await _pipeline_round(orch, payload, steps))
        progress(
            f"fan-out {steps} round {index + 1}/{rounds}: raw {raw[-1] * 1e3:7.1f} ms | "
            f"pipeline {callboard[-1] * 1e3:7.1f} ms"
        )
    ratio = median(c / r for r, c in zip(raw, callboard, strict=True))
    return FanoutResult(steps=steps, raw=raw, callboard=callboard, ratio=ratio)
