"""Raw nats-py against callboard, in alternating rounds of the same run.

For each concurrency: a short warm-up of both, then ``rounds`` pairs of rounds
(raw, callboard, raw, callboard, ...), each of ``duration`` seconds from the
same requester pool. The ratios are the median of the per-pair ratios, so slow
drift in a noisy machine's speed cancels within a pair. Every round also
records the CPU each side spent per request (requester, responders, server),
a measure that noise inflates far less than wall-clock time.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence

from ._load import Send, drive
from ._procstat import cpu_seconds
from ._stats import Ratios, RoundResult, median_ratios

__all__ = ["Contender", "LevelComparison", "compare"]

Progress = Callable[[str], None]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Contender:
    """One side of the comparison: how it sends, and which processes serve it.

    Attributes:
        name: ``raw`` or ``callboard``.
        send: sends one request and waits for its reply.
        serving_pids: the responder or agent processes (for their CPU time).
    """

    name: str
    send: Send
    serving_pids: Sequence[int]


@dataclasses.dataclass(frozen=True, kw_only=True)
class LevelComparison:
    """Both contenders at one concurrency.

    Attributes:
        concurrency: requests in flight at once.
        raw: raw's rounds, in order.
        callboard: callboard's rounds, in order (round i ran right after raw's).
        ratios: the median per-pair ratios callboard / raw.
    """

    concurrency: int
    raw: list[RoundResult]
    callboard: list[RoundResult]
    ratios: Ratios


async def compare(
    raw: Contender,
    callboard: Contender,
    *,
    concurrencies: Sequence[int],
    rounds: int,
    duration: float,
    warmup: float,
    server_pid: int | None,
    progress: Progress = lambda line: None,
) -> list[LevelComparison]:
    """Run the alternating rounds at each concurrency."""
    levels = []
    for concurrency in concurrencies:
        for contender in (raw, callboard):
            await drive(contender.send, concurrency, duration=warmup)
        pairs: list[tuple[RoundResult, RoundResult]] = []
        for index in range(rounds):
            pair = []
            for contender in (raw, callboard):
                result = await _measured_round(contender, concurrency, duration, server_pid)
                pair.append(result)
            raw_round, callboard_round = pair
            pairs.append((raw_round, callboard_round))
            progress(
                f"c={concurrency:<4} round {index + 1}/{rounds}: "
                f"raw {raw_round.throughput:8.0f}/s p99 {raw_round.p99 * 1e3:7.2f} ms | "
                f"callboard {callboard_round.throughput:8.0f}/s "
                f"p99 {callboard_round.p99 * 1e3:7.2f} ms"
                + (
                    f" | errors {raw_round.errors}/{callboard_round.errors}"
                    if raw_round.errors or callboard_round.errors
                    else ""
                )
            )
        levels.append(
            LevelComparison(
                concurrency=concurrency,
                raw=[r for r, _ in pairs],
                callboard=[c for _, c in pairs],
                ratios=median_ratios(pairs),
            )
        )
    return levels


async def _measured_round(
    contender: Contender, concurrency: int, duration: float, server_pid: int | None
) -> RoundResult:
    sides = {"requester": [os.getpid()], "responder": list(contender.serving_pids)}
    if server_pid is not None:
        sides["server"] = [server_pid]
    before = {side: sum(cpu_seconds(pid) for pid in pids) for side, pids in sides.items()}
    result = await drive(contender.send, concurrency, duration=duration)
    after = {side: sum(cpu_seconds(pid) for pid in pids) for side, pids in sides.items()}
    requests = max(result.requests, 1)
    return result.with_cpu({side: (after[side] - before[side]) / requests * 1e6 for side in sides})
