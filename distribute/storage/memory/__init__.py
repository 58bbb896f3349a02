"""The memory backend (`memory://`): volatile storage in plain Python, for tests and quick demonstrations."""

from __future__ import annotations

from .store import MemoryStorage

__all__ = ["MemoryStorage"]
