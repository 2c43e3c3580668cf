"""Reconnect backoff: doubling per failed round, capped, half of it random."""

from __future__ import annotations

import random

import pytest

from bus._connect import MAX_RECONNECT_WAIT, reconnect_delay


@pytest.mark.parametrize(
    ("rounds", "full"), [(0, 1.0), (1, 2.0), (3, 8.0), (10, MAX_RECONNECT_WAIT)]
)
def test_the_wait_doubles_per_failed_round_up_to_the_cap(rounds: int, full: float) -> None:
    rng = random.Random(7)
    waits = [reconnect_delay(rounds, 1.0, rng=rng) for _ in range(200)]
    assert all(full / 2 <= w <= full for w in waits)
    assert max(waits) - min(waits) > full / 4  # jittered: daemons do not retry in step


def test_a_huge_number_of_rounds_stays_at_the_cap() -> None:
    assert reconnect_delay(10_000, 0.5) <= MAX_RECONNECT_WAIT
