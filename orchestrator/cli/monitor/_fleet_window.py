"""Sliding-window task statistics of one agent, for ``callboard monitor``'s table.

Pure and clock-free: every call takes ``now`` (monotonic seconds, when the
monitor received the event, not the agent's ``ts``, so clock skew between
machines cannot distort a rate), which makes the numbers testable with explicit
timestamps.
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["DEFAULT_WINDOW", "TaskWindow", "quantile"]

DEFAULT_WINDOW = 60.0
"""Seconds of history behind the table's rates and percentiles."""


MAX_SAMPLES_PER_SECOND = 256
"""Handler times kept per agent and second for the percentiles: an agent that ends
more tasks than that in a second is counted in full, but its percentiles are
those of its first tasks of each second. Bounds the window's memory whatever an
agent (or anyone sending events in its name) reports."""


class _Second:
    """The tasks that ended within one second."""

    __slots__ = ("at", "ended", "failed", "latencies")

    def __init__(self, at: int) -> None:
        self.at = at
        self.ended = 0
        self.failed = 0
        self.latencies: list[float] = []


class TaskWindow:
    """The tasks one agent ended within the last ``window`` seconds.

    Kept as one bucket per second, so its memory is bounded by the window's
    length, not by how many events arrive; a task leaves the window when the
    second it ended in is a whole window old.

    Args:
        since: when observation started; until a whole window has passed, rates
            are over the time observed, not diluted over the full window.
        window: the window's length in seconds.
    """

    __slots__ = ("_seconds", "since", "window")

    def __init__(self, since: float, *, window: float = DEFAULT_WINDOW) -> None:
        self.since = since
        self.window = window
        self._seconds: deque[_Second] = deque()

    def add(self, now: float, *, elapsed_ms: float | None, failed: bool) -> None:
        """Record a task that ended at ``now``; ``elapsed_ms`` None if it has no latency
        (cancelled, or refused before it ran)."""
        at = math.floor(now)
        seconds = self._seconds
        if not seconds or seconds[-1].at < at:
            self.prune(now)
            seconds.append(_Second(at))
        second = seconds[-1]
        second.ended += 1
        second.failed += failed
        if elapsed_ms is not None and len(second.latencies) < MAX_SAMPLES_PER_SECOND:
            second.latencies.append(elapsed_ms)

    def prune(self, now: float) -> None:
        """Drop what ended more than a window before ``now``."""
        cutoff = now - self.window
        seconds = self._seconds
        while seconds and seconds[0].at <= cutoff:
            seconds.popleft()

    def count(self, now: float) -> int:
        """Tasks ended within the window."""
        self.prune(now)
        return sum(second.ended for second in self._seconds)

    def rate(self, now: float) -> float:
        """Tasks per second over the window (or over the time observed, if shorter)."""
        span = min(self.window, now - self.since)
        return self.count(now) / max(span, 1.0)

    def error_rate(self, now: float) -> float | None:
        """The fraction of the window's tasks that failed; None without tasks."""
        total = self.count(now)
        if not total:
            return None
        return sum(second.failed for second in self._seconds) / total

    def latency_ms(self, now: float, *quantiles: float) -> tuple[float | None, ...]:
        """The given quantiles (0..1) of the window's handler times, in ms (None if none)."""
        self.prune(now)
        values = sorted(ms for second in self._seconds for ms in second.latencies)
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
