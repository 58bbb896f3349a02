"""Auto-pause: watches each campaign's first task outcomes and says when too many of them failed.

A kernel that cannot work (no `main`, a static dataset that is not JSON) fails on every dataset,
`max_task_errors` times each; without this watch a campaign of a million datasets would burn a
million times that many volunteer tasks before it ended. The dispatcher opens a window when it
starts serving a campaign (created, resumed, or after a restart of this server process), feeds it
the outcomes workers return, and pauses the campaign when the window closes with at least
`pause_failure_ratio` of its `pause_after_failures` outcomes failed. Each window is judged once:
a campaign that starts well never pauses for later failures, and resuming opens a fresh window.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..models import FailedTask, FinishedTask

__all__ = ["EarlyFailures", "Window"]


@dataclass(slots=True)
class Window:
    outcomes: int = 0
    failed: int = 0
    messages: Counter[str] = field(default_factory=Counter)


class EarlyFailures:
    """The open windows of this process, by campaign id."""

    def __init__(self, size: int, ratio: float) -> None:
        self.size = size  # 0: auto-pause is off
        self.ratio = ratio
        self._open: dict[int, Window] = {}

    def open(self, campaign_id: int) -> None:
        """Start watching a campaign's next `size` outcomes (again, if it was watched before)."""
        if self.size > 0:
            self._open[campaign_id] = Window()

    def close(self, campaign_id: int) -> None:
        self._open.pop(campaign_id, None)

    def record(self, outcome: FinishedTask | FailedTask) -> str | None:
        """Count one task outcome as it arrives; returns the reason to pause its campaign now, or None.

        A window takes outcomes until it holds `size` of them, then is judged and closed. Outcomes
        are counted on arrival, not when stored, so that a slow database does not let a broken
        campaign run on while its window waits for a commit.
        """
        window = self._open.get(outcome.campaign_id)
        if window is None:
            return None
        window.outcomes += 1
        if isinstance(outcome, FailedTask):
            window.failed += 1
            window.messages[outcome.message] += 1
        if window.outcomes < self.size:
            return None
        del self._open[outcome.campaign_id]
        if window.failed < self.ratio * self.size:
            return None
        message = window.messages.most_common(1)[0][0]
        message = message if len(message) <= 300 else message[:300] + "…"
        return f"{window.failed} of its first {window.outcomes} tasks failed: {message}"
