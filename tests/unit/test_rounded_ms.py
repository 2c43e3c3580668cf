"""``rounded_ms`` is ``round(ns / 1e6, 3)``: the ``elapsed_ms`` of a completed event
is the same float as before the shortcut, ties and huge durations included."""

from __future__ import annotations

import random

import pytest

from actors._status import rounded_ms


def test_every_duration_below_a_millisecond_and_a_bit_rounds_as_round_does() -> None:
    for elapsed_ns in range(0, 1_002_001):
        assert rounded_ms(elapsed_ns) == round(elapsed_ns / 1e6, 3), elapsed_ns


def test_random_durations_up_to_months_round_as_round_does() -> None:
    draw = random.Random(13)
    for _ in range(200_000):
        elapsed_ns = draw.randrange(0, 10**16 if draw.random() < 0.5 else 10**11)
        assert rounded_ms(elapsed_ns) == round(elapsed_ns / 1e6, 3), elapsed_ns


@pytest.mark.parametrize(
    "elapsed_ns",
    [
        500,
        1_500,
        2_500,
        12_345_500,
        10**15 - 1,
        10**15,
        10**15 + 500,
        2**53 + 1,
        10**20,
        -1,
        -1_500,
    ],
)
def test_ties_edges_and_odd_durations_are_left_to_round(elapsed_ns: int) -> None:
    assert rounded_ms(elapsed_ns) == round(elapsed_ns / 1e6, 3)
