"""The statistics of the suite: percentiles, one round's summary, and the ratios
callboard / raw that the issue's targets are stated in.

Pure functions and frozen values, no I/O: ``tests/unit/test_bench_stats.py``
checks them without a bus.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Iterable, Sequence

__all__ = [
    "TARGET_P99",
    "TARGET_THROUGHPUT",
    "Ratios",
    "RoundResult",
    "median",
    "median_ratios",
    "percentile",
    "round_ratios",
    "spread",
]

TARGET_THROUGHPUT = 0.9
"""callboard's throughput must be at least this fraction of raw nats-py's (at c=128)."""
TARGET_P99 = 1.2
"""callboard's p99 latency may be at most this multiple of raw nats-py's (at c=128)."""


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of already sorted values.

    Linear interpolation between the two nearest ranks (numpy's default), so
    p50 of an even count is the mean of the middle two.

    Raises:
        ValueError: no values, or ``q`` outside [0, 100].
    """
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within [0, 100], got {q}")
    position = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = position - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction


def median(values: Iterable[float]) -> float:
    """The median (the mean of the middle two for an even count)."""
    return statistics.median(values)


def spread(values: Iterable[float]) -> tuple[float, float]:
    """The smallest and largest value, to show how much rounds disagree."""
    items = list(values)
    if not items:
        raise ValueError("spread of no values")
    return min(items), max(items)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RoundResult:
    """One round of one variant: how many requests, how fast, how spread.

    Attributes:
        requests: replies received (errors excluded).
        errors: requests that raised.
        elapsed: seconds from the first request to the last reply.
        p50: median latency, seconds.
        p99: 99th-percentile latency, seconds.
        cpu_us: CPU microseconds per request by side (``requester``,
            ``responder``, ``server``), when measured.
    """

    requests: int
    errors: int
    elapsed: float
    p50: float
    p99: float
    cpu_us: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def throughput(self) -> float:
        """Replies per second."""
        return self.requests / self.elapsed if self.elapsed > 0 else 0.0

    @classmethod
    def from_latencies(
        cls, latencies: Iterable[float], *, elapsed: float, errors: int = 0
    ) -> RoundResult:
        """Summarise the latencies (seconds) of the replies of one round."""
        ordered = sorted(latencies)
        if not ordered:
            return cls(requests=0, errors=errors, elapsed=elapsed, p50=math.nan, p99=math.nan)
        return cls(
            requests=len(ordered),
            errors=errors,
            elapsed=elapsed,
            p50=percentile(ordered, 50),
            p99=percentile(ordered, 99),
        )

    def with_cpu(self, cpu_us: dict[str, float]) -> RoundResult:
        """A copy with the CPU cost per request filled in."""
        return dataclasses.replace(self, cpu_us=dict(cpu_us))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Ratios:
    """callboard / raw: above 1 is faster for throughput, slower for latency.

    Attributes:
        throughput: callboard's replies per second over raw's.
        p50: callboard's median latency over raw's.
        p99: callboard's p99 latency over raw's.
    """

    throughput: float
    p50: float
    p99: float

    def meets_targets(self) -> bool:
        """Whether these ratios reach the issue's targets (for c=128)."""
        return self.throughput >= TARGET_THROUGHPUT and self.p99 <= TARGET_P99


def _ratio(numerator: float, denominator: float) -> float:
    if denominator <= 0 or math.isnan(denominator) or math.isnan(numerator):
        return math.nan
    return numerator / denominator


def round_ratios(raw: RoundResult, callboard: RoundResult) -> Ratios:
    """The ratios of one pair of rounds run back to back."""
    return Ratios(
        throughput=_ratio(callboard.throughput, raw.throughput),
        p50=_ratio(callboard.p50, raw.p50),
        p99=_ratio(callboard.p99, raw.p99),
    )


def median_ratios(pairs: Sequence[tuple[RoundResult, RoundResult]]) -> Ratios:
    """The median over rounds of each per-round ratio.

    Each round's ratio compares two runs made seconds apart, so slow drift of
    a noisy machine cancels within a pair; the median drops the odd pair a
    burst of noise hit.

    Raises:
        ValueError: no pairs.
    """
    if not pairs:
        raise ValueError("no rounds to compare")
    per_round = [round_ratios(raw, callboard) for raw, callboard in pairs]
    return Ratios(
        throughput=median(r.throughput for r in per_round),
        p50=median(r.p50 for r in per_round),
        p99=median(r.p99 for r in per_round),
    )
