"""Campaign scheduling: which campaign the next idle worker that accepts "any" campaign serves.

The contract (`Candidate`, `Scheduler`) is in `base`; the built-in policies are `round-robin`,
`priority` and `compute-time`, registered through the `register_schedulers` plugin hook by
`distribute.scheduler.builtin` exactly as a third-party plugin would be. Pick one by name with
`distribute.plugins.make_scheduler`.
"""

from __future__ import annotations

from .base import Candidate, Scheduler, next_in_rotation
from .compute_time import ComputeTime
from .priority import Priority
from .round_robin import RoundRobin

__all__ = ["Candidate", "ComputeTime", "Priority", "RoundRobin", "Scheduler", "next_in_rotation"]
