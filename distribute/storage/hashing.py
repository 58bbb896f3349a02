"""The two hashes every storage backend computes the same way: API/session tokens and campaign content."""

from __future__ import annotations

import hashlib

__all__ = ["content_hash", "hash_token"]


def hash_token(token: str) -> str:
    """Tokens are 256-bit random strings, so a plain SHA-256 is the right (fast) hash: a leak yields nothing usable."""
    return hashlib.sha256(token.encode()).hexdigest()


def content_hash(kernel: str, static_dataset: str) -> str:
    """Of a campaign's kernel and static dataset: lets a worker that has both skip a re-send."""
    digest = hashlib.sha256()
    for part in (kernel, static_dataset):
        data = part.encode()
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()[:32]
