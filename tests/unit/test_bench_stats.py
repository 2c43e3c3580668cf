"""The benchmark suite's statistics: percentiles, round summaries, ratios.

Pure functions, no bus: the suite itself (``python -m bench``) is not a test.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import msgspec
import pytest

# bench/ is a top-level folder of the repository, not an installed package
ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench._load import echo_payload  # noqa: E402
from bench._stats import (  # noqa: E402
    Ratios,
    RoundResult,
    median_ratios,
    percentile,
    round_ratios,
    spread,
)


def test_percentile_interpolates_between_ranks() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 99) == pytest.approx(3.97)


def test_percentile_of_one_value_is_that_value() -> None:
    assert percentile([7.0], 50) == 7.0
    assert percentile([7.0], 99) == 7.0


def test_percentile_matches_nearest_rank_on_a_hundred_values() -> None:
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)


@pytest.mark.parametrize("q", [-1.0, 100.5])
def test_percentile_rejects_out_of_range(q: float) -> None:
    with pytest.raises(ValueError, match="within"):
        percentile([1.0], q)


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_round_result_summarises_unsorted_latencies() -> None:
    result = RoundResult.from_latencies([0.003, 0.001, 0.002, 0.004], elapsed=2.0, errors=1)
    assert result.requests == 4
    assert result.errors == 1
    assert result.throughput == 2.0
    assert result.p50 == pytest.approx(0.0025)
    assert result.p99 == pytest.approx(0.00397)


def test_round_result_without_replies_has_no_percentiles() -> None:
    result = RoundResult.from_latencies([], elapsed=1.0, errors=3)
    assert result.requests == 0
    assert result.throughput == 0.0
    assert math.isnan(result.p50)
    assert math.isnan(result.p99)


def test_with_cpu_keeps_the_round_and_adds_the_cost() -> None:
    result = RoundResult.from_latencies([0.001], elapsed=1.0)
    costed = result.with_cpu({"requester": 40.0})
    assert costed.cpu_us == {"requester": 40.0}
    assert costed.p50 == result.p50
    assert result.cpu_us == {}


def _round(throughput: float, p50: float, p99: float) -> RoundResult:
    return RoundResult(requests=int(throughput), errors=0, elapsed=1.0, p50=p50, p99=p99)


def test_round_ratios_are_callboard_over_raw() -> None:
    ratios = round_ratios(_round(1000, 1.0, 2.0), _round(900, 1.5, 2.2))
    assert ratios.throughput == pytest.approx(0.9)
    assert ratios.p50 == pytest.approx(1.5)
    assert ratios.p99 == pytest.approx(1.1)


def test_round_ratios_against_an_empty_round_are_nan() -> None:
    empty = RoundResult.from_latencies([], elapsed=1.0)
    ratios = round_ratios(empty, _round(900, 1.5, 2.2))
    assert math.isnan(ratios.throughput)
    assert math.isnan(ratios.p99)


def test_median_ratios_take_each_ratio_median_over_pairs() -> None:
    raw = _round(1000, 1.0, 2.0)
    pairs = [
        (raw, _round(500, 2.0, 2.0)),
        (raw, _round(800, 1.2, 3.0)),
        (raw, _round(900, 1.1, 2.4)),
    ]
    assert median_ratios(pairs) == Ratios(throughput=0.8, p50=1.2, p99=1.2)


def test_median_ratios_of_an_even_count_average_the_middle_two() -> None:
    raw = _round(1000, 1.0, 1.0)
    pairs = [(raw, _round(600, 1.0, 1.0)), (raw, _round(800, 3.0, 1.0))]
    ratios = median_ratios(pairs)
    assert ratios.throughput == pytest.approx(0.7)
    assert ratios.p50 == pytest.approx(2.0)


def test_median_ratios_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no rounds"):
        median_ratios([])


@pytest.mark.parametrize(
    ("ratios", "met"),
    [
        (Ratios(throughput=0.9, p50=1.0, p99=1.2), True),
        (Ratios(throughput=0.89, p50=1.0, p99=1.0), False),
        (Ratios(throughput=1.0, p50=1.0, p99=1.21), False),
    ],
)
def test_targets_are_throughput_and_p99(ratios: Ratios, met: bool) -> None:
    assert ratios.meets_targets() is met


def test_spread_is_min_and_max() -> None:
    assert spread([3.0, 1.0, 2.0]) == (1.0, 3.0)
    with pytest.raises(ValueError, match="no values"):
        spread([])


def test_echo_payload_has_the_exact_encoded_size() -> None:
    for size in (11, 64, 256, 4096):
        assert len(msgspec.json.encode(echo_payload(size))) == size
    held = echo_payload(256, delay_ms=3000)
    assert held["delay_ms"] == 3000
    assert len(msgspec.json.encode(held)) == 256
    with pytest.raises(ValueError, match="at least"):
        echo_payload(5)
