"""The `priority` policy: strictly the highest priority first, round-robin among campaigns of equal priority."""

from __future__ import annotations

from collections.abc import Sequence

from .base import Candidate, next_in_rotation

__all__ = ["Priority"]

_MAX_REMEMBERED_LEVELS = 4096


class Priority:
    """Serve only the candidates of the highest priority present; rotate among them in id order.

    Lower levels get workers only while no higher level has work (strict priority, so a busy
    high-priority campaign can starve the others by design). Each level remembers its own last
    chosen id, so when a higher level appears and goes away again, the rotation of the lower level
    resumes where it stopped instead of starting over.
    """

    name = "priority"

    def __init__(self) -> None:
        self._last_by_level: dict[int, int] = {}

    def choose(self, candidates: Sequence[Candidate]) -> Candidate | None:
        if not candidates:
            return None
        top = max(candidate.priority for candidate in candidates)
        level = [candidate for candidate in candidates if candidate.priority == top]
        chosen = next_in_rotation(level, self._last_by_level.get(top))
        self._last_by_level.pop(top, None)  # re-insert: the dict is kept in least-recently-used order
        self._last_by_level[top] = chosen.campaign_id
        if len(self._last_by_level) > _MAX_REMEMBERED_LEVELS:
            del self._last_by_level[next(iter(self._last_by_level))]
        return chosen

    def task_finished(self, campaign_id: int, compute_seconds: float) -> None:
        """Priority does not look at compute time."""
