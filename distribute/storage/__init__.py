"""Storage: where campaigns, datasets, leases and results live.

`open_storage(url)` picks the backend registered for the URL's scheme through the plugin hook
`register_storage` (the built-in Pony backend serves sqlite:// and postgres://).
"""

from __future__ import annotations

from .pony.store import PonyStorage, content_hash, hash_token

__all__ = ["PonyStorage", "content_hash", "hash_token", "open_storage"]


async def open_storage(url: str, threads: int = 4) -> PonyStorage:
    from ..plugins.manager import storage_factory

    return await storage_factory(url)(url, threads)
