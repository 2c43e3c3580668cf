"""Sliding-window task statistics of one agent, for ``callboard monitor``'s table.

Pure and clock-free: every call takes ``now`` (monotonic seconds, when the
monitor received the event, not the agent's ``ts``, so clock skew between
machines cannot distort a rate), which makes the numbers testable with explicit
timestamps.
"""

from __future__ import annotations

import math
from collections import deque
from typing import NamedTuple

__all__ = ["DEFAULT_WINDOW", "TaskWindow", "quantile"]

DEFAULT_WINDOW = 60.0
"""Seconds of history behind the table's rates and percentiles."""


class _Ended(NamedTuple):
    at: float
    elapsed_ms: float | None  # None: no handler time to count (a cancelled task)
    failed: bool


class TaskWindow:
    """The tasks one agent ended within the last ``window`` seconds.

    Args:
        since: when observation started; until a whole window has passed, rates
            are over the time observed, not diluted over the full window.
        window: the window's length in seconds.
    """

    __slots__ = ("_ended", "since", "window")

    def __init__(self, since: float, *, window: float = DEFAULT_WINDOW) -> None:
        self.since = since
        self.window = window
        self._ended: deque[_Ended] = deque()

    def add(self, now: float, *, elapsed_ms: float | None, failed: bool) -> None:
        """Record a task that ended at ``now``; ``elapsed_ms`` None if it has no latency."""
        self._ended.append(_Ended(now, elapsed_ms, failed))

    def prune(self, now: float) -> None:
        """Drop what ended more than a window before ``now``."""
        cutoff = now - self.window
        ended = self._ended
        while ended and ended[0].at <= cutoff:
            ended.popleft()

    def count(self, now: float) -> int:
        """Tasks ended within the window."""
        self.prune(now)
        return len(self._ended)

    def rate(self, now: float) -> float:
        """Tasks per second over the window (or over the time observed, if shorter)."""
        span = min(self.window, now - self.since)
        return self.count(now) / max(span, 1.0)

    def error_rate(self, now: float) -> float | None:
        """The fraction of the window's tasks that failed; None without tasks."""
        total = self.count(now)
        if not total:
            return None
        return sum(1 for e in self._ended if e.failed) / total

    def latency_ms(self, now: float, *quantiles: float) -> tuple[float | None, ...]:
        """The given quantiles (0..1) of the window's handler times, in ms (None if none)."""
        self.prune(now)
        values = sorted(e.elapsed_ms for e in self._ended if e.elapsed_ms is not None)
        return tuple(quantile(values, q) for q in quantiles)


def quantile(ordered: list[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile of ascending ``ordered`` values; None if empty.

    Nearest-rank returns a value that was observed (no interpolation), so a p99 of
    few samples is the slowest of them, which is what someone watching wants.
    """
    if not ordered:
        return None
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]
