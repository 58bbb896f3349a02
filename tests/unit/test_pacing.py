"""The group commit's pacing: how long the dispatcher waits before the next commit."""

from __future__ import annotations

import pytest

from distribute.work.pacing import FlushPacing

PACING = FlushPacing(shortest=0.02, longest=0.5, aim=50)


def test_nothing_arrived_waits_the_longest() -> None:
    assert PACING.next_wait(0, 0.5) == 0.5


def test_a_high_rate_waits_the_shortest() -> None:
    assert PACING.next_wait(100_000, 1.0) == 0.02


def test_a_middling_rate_waits_for_the_aimed_batch() -> None:
    assert PACING.next_wait(500, 1.0) == pytest.approx(0.1)  # 50 results at 500/s


def test_a_trickle_waits_no_longer_than_the_longest() -> None:
    assert PACING.next_wait(1, 1.0) == 0.5


def test_no_elapsed_time_is_not_a_division_by_zero() -> None:
    assert PACING.next_wait(10, 0.0) == 0.02


def test_a_followed_trickle_waits_the_shortest() -> None:
    assert PACING.next_wait(1, 1.0, followed=True) == 0.02
