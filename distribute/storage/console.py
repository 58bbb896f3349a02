"""What the web console keeps and reads through storage: accounts (passwords, sessions, reset and
verification links, API tokens) and the queries behind its pages. Part of the `Storage` protocol
(`base.Storage.accounts` and `.queries`), kept here so that the protocol stays readable in parts.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol

from ..models import ApiTokenInfo, HostShare, StoredResult, User, WebSessionInfo

__all__ = ["AccountStore", "ConsoleQueries"]


class AccountStore(Protocol):
    """The console's accounts: server secret, passwords, sessions, password resets, tokens, deletion.

    Session and reset tokens are kept only as `hash_token(token)`.
    """

    async def secret(self) -> bytes:
        """A random key kept in the database: created once (first writer wins), the same for every process."""
        ...

    async def credentials(self, email: str) -> tuple[User, str | None] | None:
        """The user with this e-mail and their password hash (None: no console password), or None."""
        ...

    async def password_hash(self, user_id: int) -> str | None:
        """The user's password hash; None if there is none or no such user."""
        ...

    async def set_password(self, user_id: int, password_hash: str) -> None:
        """Store a new password hash and end every session of the user (same transaction)."""
        ...

    async def set_display_name(self, user_id: int, display_name: str) -> User:
        """Store how the embed card names this user ("": no name) and return the updated user.

        Stored as given (the console validates it); raises `NotFound` for an unknown user.
        """
        ...

    async def create_session(self, user_id: int, lifetime: timedelta, user_agent: str = "") -> tuple[str, str]:
        """A new session "dss_…": returns (cookie token, CSRF token); expired sessions are purged.

        The user agent is kept up to 300 characters.
        """
        ...

    async def session(self, token: str) -> WebSessionInfo | None:
        """The live session for a cookie token; None if unknown, ended or expired."""
        ...

    async def end_session(self, token: str) -> None:
        """End the session (nothing happens for an unknown token)."""
        ...

    async def create_reset(self, user_id: int, lifetime: timedelta) -> str:
        """A single-use password reset token; the user's earlier reset tokens stop working."""
        ...

    async def reset_valid(self, token: str) -> bool:
        """Is this reset token known, unused and unexpired?"""
        ...

    async def redeem_reset(self, token: str, password_hash: str) -> User | None:
        """Use a reset token: set the password, end every session, revoke every API token; None if not valid.

        Atomic: of two concurrent uses of one token, exactly one succeeds.
        """
        ...

    async def create_verification(self, user_id: int, lifetime: timedelta) -> str | None:
        """A new address-verification token for an unverified user (earlier ones stop working); None if the
        user is verified already or unknown."""
        ...

    async def verify_email(self, token: str) -> User | None:
        """Use an address-verification token: the user becomes verified; None if unknown or expired."""
        ...

    async def tokens(self, user_id: int) -> list[ApiTokenInfo]:
        """The user's API tokens (revoked ones included), oldest first."""
        ...

    async def revoke_token(self, user_id: int, token_id: int) -> bool:
        """Revoke one of the user's tokens; False if the user has no token with that id."""
        ...

    async def revoke_tokens(self, user_id: int) -> int:
        """Revoke every API token of the user; returns how many were still live."""
        ...

    async def deleted_campaign_ids(self, user_id: int) -> list[int]:
        """Ids of the user's deleted campaigns, highest first."""
        ...

    async def delete_account(self, user_id: int) -> None:
        """Remove the user and all they own (campaigns, datasets, results, errors, tokens, sessions, the
        claims of volunteer identities and the leaderboard listing: the identities' credit stays, unclaimed).

        Nothing happens for an unknown user.
        """
        ...


class ConsoleQueries(Protocol):
    """The reads only the console needs."""

    async def result_count(self, campaign_id: int) -> int:
        """Every stored result of the campaign, whatever its status, except superseded ones (`versions`)."""
        ...

    async def results_page(self, campaign_id: int, offset: int, limit: int) -> list[StoredResult]:
        """Results of every status (each with its real `status`) in (dataset id, result id) order, OFFSET paging
        (superseded ones left out, `versions`)."""
        ...

    async def result(self, campaign_id: int, result_id: int) -> StoredResult | None:
        """One result (with its real `status`), only if it belongs to this campaign."""
        ...

    async def hosts(self, campaign_id: int) -> list[HostShare]:
        """Results and compute time per host ("" for none), most results first, at most 50 hosts."""
        ...

    async def throughput(self, campaign_id: int, start: float, width: float, buckets: int) -> list[int]:
        """Results stored per time bucket: `buckets` counts, bucket i covering epoch seconds
        [start + i * width, start + (i + 1) * width). Empty buckets count 0, so a gap is visible.

        Every stored result of the campaign counts, whatever its status; one query, whatever the window.
        """
        ...

    async def sample_datasets(self, campaign_id: int, n: int) -> list[tuple[int, bytes]]:
        """The campaign's first n datasets (lowest ids, any state) as stored: (id, msgpack payload)."""
        ...
