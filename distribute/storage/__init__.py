"""Storage: where campaigns, datasets, leases and results live.

`Storage` (in `base`) is the protocol every backend implements; `distribute.plugins.open_storage(url)`
opens the backend registered for the URL's scheme (the built-in ones: Pony for sqlite:// and
postgres://, and memory://). `content_hash` and `hash_token` are computed alike by every backend.
"""

from __future__ import annotations

from .base import Storage
from .hashing import content_hash, hash_token

__all__ = ["Storage", "content_hash", "hash_token"]
