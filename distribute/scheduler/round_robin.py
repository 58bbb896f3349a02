"""The `round-robin` policy: every campaign with work gets the next worker in turn, in campaign-id order."""

from __future__ import annotations

from collections.abc import Sequence

from .base import Candidate, next_in_rotation

__all__ = ["RoundRobin"]


class RoundRobin:
    """Rotate across the candidates in campaign-id order, ignoring priority, weight and compute time.

    Only the last chosen id is remembered, so the rotation is exact (1, 2, 3, 1, 2, 3, ...) and stays
    well defined when campaigns join or run dry: the next choice is the smallest id after the last
    one, wrapping round to the smallest id.
    """

    name = "round-robin"

    def __init__(self) -> None:
        self._last_id: int | None = None

    def choose(self, candidates: Sequence[Candidate]) -> Candidate | None:
        if not candidates:
            return None
        chosen = next_in_rotation(candidates, self._last_id)
        self._last_id = chosen.campaign_id
        return chosen

    def task_finished(self, campaign_id: int, compute_seconds: float) -> None:
        """Round-robin does not look at compute time."""
