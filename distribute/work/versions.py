"""Which kernel version a worker runs: when a connection needs a new campaign frame, and how its results are tagged.

A connection runs the kernel of the last campaign frame it was sent. A newer version of the same
campaign (an owner's kernel update, learned by this process's dispatcher at once or at its next
refresh from storage) means a new frame, sent once the tasks of the old one are answered, so each
result is tagged with the version that actually computed it.
"""

from __future__ import annotations

from ..models import Campaign

__all__ = ["needs_frame", "version_run"]


def needs_frame(running: Campaign | None, campaign: Campaign) -> bool:
    """The worker runs another campaign (or none yet), or an older kernel version of this one."""
    return running is None or running.id != campaign.id or running.kernel_version != campaign.kernel_version


def version_run(running: Campaign | None) -> int:
    """The kernel version a result of this connection was computed with: its last campaign frame's."""
    return running.kernel_version if running is not None else 1
