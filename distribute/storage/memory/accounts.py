"""The memory backend's people: users and API tokens, the console's accounts, and the console's reads.

As in the SQL backends, secrets (API, session and reset tokens) are kept only as SHA-256 hashes, a
new password ends every session of its user, and a reset token works once.
"""

from __future__ import annotations

import secrets
from bisect import bisect_left
from datetime import UTC, datetime, timedelta

from ...errors import NotFound, SettingsError
from ...models import ApiTokenInfo, HostShare, StoredResult, User, WebSessionInfo
from ..hashing import hash_token
from .tables import DatasetRow, ResultRow, SecretRow, Tables, TokenRow, UserRow, stored_result, superseded

__all__ = ["MemoryAccounts", "MemoryConsoleQueries", "MemoryUsers"]


def user_of(row: UserRow) -> User:
    return User(
        id=row.id,
        email=row.email,
        created=row.created,
        verified=row.verified,
        display_name=row.display_name,
        admin=row.admin,
    )


class MemoryUsers:
    """MemoryStorage's users and API tokens (a base class: `tables` comes from MemoryStorage)."""

    tables: Tables

    async def create_user(
        self, email: str, password_hash: str | None = None, *, verified: bool = True, admin: bool = False
    ) -> User:
        async with self.tables.session() as t:
            if email in t.user_ids:
                raise SettingsError(f"a user with e-mail {email} exists already")
            if not email:
                raise ValueError("a user needs an e-mail address")
            row = UserRow(t.next_id("user"), email, password_hash, datetime.now(UTC), verified, admin=admin)
            t.users[row.id] = row
            t.user_ids[email] = row.id
            return user_of(row)

    async def get_user(self, user_id: int) -> User | None:
        async with self.tables.session() as t:
            row = t.users.get(user_id)
            return user_of(row) if row else None

    async def user_by_email(self, email: str) -> User | None:
        async with self.tables.session() as t:
            user_id = t.user_ids.get(email)
            return None if user_id is None else user_of(t.users[user_id])

    async def create_token(self, user_id: int, name: str = "") -> str:
        async with self.tables.session() as t:
            if user_id not in t.users:
                raise NotFound(f"user {user_id} does not exist")
            token = "dst_" + secrets.token_urlsafe(32)
            row = TokenRow(t.next_id("token"), user_id, hash_token(token), name, datetime.now(UTC))
            t.tokens[row.id] = row
            t.token_ids[row.token_hash] = row.id
            return token

    async def user_for_token(self, token: str) -> User | None:
        async with self.tables.session() as t:
            token_id = t.token_ids.get(hash_token(token))
            row = None if token_id is None else t.tokens[token_id]
            return user_of(t.users[row.user_id]) if row is not None and not row.revoked else None


class MemoryAccounts:
    """Accounts, console sessions, password resets and API tokens."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables

    async def secret(self) -> bytes:
        """A random key kept in the database, so every server on it signs with the same one."""
        async with self.tables.session() as t:
            return bytes.fromhex(t.meta.setdefault("console_secret", secrets.token_hex(32)))

    async def credentials(self, email: str) -> tuple[User, str | None] | None:
        """The user with this e-mail and their password hash (None: no console password)."""
        async with self.tables.session() as t:
            user_id = t.user_ids.get(email)
            if user_id is None:
                return None
            row = t.users[user_id]
            return user_of(row), row.password_hash

    async def password_hash(self, user_id: int) -> str | None:
        async with self.tables.session() as t:
            row = t.users.get(user_id)
            return row.password_hash if row else None

    async def set_password(self, user_id: int, password_hash: str) -> None:
        """Store a new password hash and end every session of the user."""
        async with self.tables.session() as t:
            _replace_password(t, _user_row(t, user_id), password_hash)

    async def set_display_name(self, user_id: int, display_name: str) -> User:
        async with self.tables.session() as t:
            row = _user_row(t, user_id)
            row.display_name = display_name
            return user_of(row)

    async def create_session(self, user_id: int, lifetime: timedelta, user_agent: str = "") -> tuple[str, str]:
        """A new console session: returns (cookie token, CSRF token); only the token's hash is kept."""
        async with self.tables.session() as t:
            user = _user_row(t, user_id)
            now = datetime.now(UTC)
            # Housekeeping on sign-in (rare) rather than a timer: expired sessions are useless anyway.
            for key in [key for key, row in t.sessions.items() if row.expires < now]:
                del t.sessions[key]
            token = "dss_" + secrets.token_urlsafe(32)
            csrf = secrets.token_urlsafe(32)
            t.sessions[hash_token(token)] = SecretRow(user.id, now + lifetime, csrf, user_agent[:300])
            return token, csrf

    async def session(self, token: str) -> WebSessionInfo | None:
        """The live session for a cookie token, or None (unknown, ended or expired)."""
        async with self.tables.session() as t:
            row = t.sessions.get(hash_token(token))
            if row is None or row.expires < datetime.now(UTC):
                return None
            return WebSessionInfo(user_of(t.users[row.user_id]), row.csrf_token, row.expires)

    async def end_session(self, token: str) -> None:
        async with self.tables.session() as t:
            t.sessions.pop(hash_token(token), None)

    async def create_reset(self, user_id: int, lifetime: timedelta) -> str:
        """A single-use reset token (earlier unused ones of the user stop working)."""
        async with self.tables.session() as t:
            user = _user_row(t, user_id)
            for key in [key for key, row in t.resets.items() if row.user_id == user.id]:
                del t.resets[key]
            token = secrets.token_urlsafe(32)
            t.resets[hash_token(token)] = SecretRow(user.id, datetime.now(UTC) + lifetime)
            return token

    async def reset_valid(self, token: str) -> bool:
        async with self.tables.session() as t:
            row = t.resets.get(hash_token(token))
            return row is not None and not row.used and row.expires >= datetime.now(UTC)

    async def redeem_reset(self, token: str, password_hash: str) -> User | None:
        """Use a reset token: set the password, end every session, revoke every API token; None if not valid."""
        async with self.tables.session() as t:
            row = t.resets.get(hash_token(token))
            if row is None or row.used or row.expires < datetime.now(UTC):
                return None
            row.used = True
            user = t.users[row.user_id]
            _replace_password(t, user, password_hash)
            _revoke_tokens(t, user.id)
            return user_of(user)

    async def create_verification(self, user_id: int, lifetime: timedelta) -> str | None:
        async with self.tables.session() as t:
            user = t.users.get(user_id)
            if user is None or user.verified:
                return None
            t.verifications.pop(user.verify_token_hash, None)
            token = secrets.token_urlsafe(32)
            user.verify_token_hash = hash_token(token)
            t.verifications[user.verify_token_hash] = SecretRow(user.id, datetime.now(UTC) + lifetime)
            return token

    async def verify_email(self, token: str) -> User | None:
        async with self.tables.session() as t:
            row = t.verifications.get(hash_token(token))
            if row is None or row.expires < datetime.now(UTC) or row.user_id not in t.users:
                return None
            del t.verifications[hash_token(token)]
            user = t.users[row.user_id]
            user.verified, user.verify_token_hash = True, ""
            return user_of(user)

    async def tokens(self, user_id: int) -> list[ApiTokenInfo]:
        async with self.tables.session() as t:
            return [
                ApiTokenInfo(row.id, row.name, row.created, row.revoked)
                for row in t.tokens.values()
                if row.user_id == user_id
            ]

    async def revoke_token(self, user_id: int, token_id: int) -> bool:
        """Revoke one of the user's tokens; False if the user has no such token."""
        async with self.tables.session() as t:
            row = t.tokens.get(token_id)
            if row is None or row.user_id != user_id:
                return False
            row.revoked = True
            return True

    async def revoke_tokens(self, user_id: int) -> int:
        """Revoke every API token of the user; returns how many were still live."""
        async with self.tables.session() as t:
            return _revoke_tokens(t, user_id)

    async def deleted_campaign_ids(self, user_id: int) -> list[int]:
        async with self.tables.session() as t:
            return sorted(
                (c.id for c in t.campaigns.values() if c.fixed.owner_id == user_id and c.deleted), reverse=True
            )

    async def delete_account(self, user_id: int) -> None:
        """Remove the user and everything they own: campaigns, datasets, results, tokens, sessions."""
        async with self.tables.session() as t:
            user = t.users.pop(user_id, None)
            if user is None:
                return
            del t.user_ids[user.email]
            for campaign in [c for c in t.campaigns.values() if c.fixed.owner_id == user_id]:
                t.drop_campaign(campaign)
            for token in [row for row in t.tokens.values() if row.user_id == user_id]:
                del t.tokens[token.id]
                del t.token_ids[token.token_hash]
            for table in (t.sessions, t.resets, t.verifications):
                for key in [key for key, row in table.items() if row.user_id == user_id]:
                    del table[key]
            for identity in [i for i, owner in t.claims.items() if owner == user_id]:  # the credit stays, unclaimed
                del t.claims[identity]
            t.listed.discard(user_id)
            t.sites = {key: site for key, site in t.sites.items() if site.owner_id != user_id}


def _user_row(t: Tables, user_id: int) -> UserRow:
    row = t.users.get(user_id)
    if row is None:
        raise NotFound(f"user {user_id} does not exist")
    return row


def _replace_password(t: Tables, user: UserRow, password_hash: str) -> None:
    """A new password ends every session (a thief's too)."""
    user.password_hash = password_hash
    for key in [key for key, row in t.sessions.items() if row.user_id == user.id]:
        del t.sessions[key]


def _revoke_tokens(t: Tables, user_id: int) -> int:
    live = [row for row in t.tokens.values() if row.user_id == user_id and not row.revoked]
    for row in live:
        row.revoked = True
    return len(live)


def _newest(dataset: DatasetRow) -> list[ResultRow]:
    """The dataset's results a newer kernel version's result did not supersede."""
    return [result for result in dataset.results if not superseded(result, dataset)]


class MemoryConsoleQueries:
    """The reads only the console needs: one result, pages of results, hosts, throughput, samples."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables

    async def result_count(self, campaign_id: int) -> int:
        async with self.tables.session() as t:
            campaign = t.campaigns.get(campaign_id)
            if campaign is None:
                return 0
            if campaign.fixed.kernel_version <= 1:
                return campaign.result_count
            return sum(len(_newest(t.datasets[dataset_id])) for dataset_id in campaign.result_datasets)

    async def results_page(self, campaign_id: int, offset: int, limit: int) -> list[StoredResult]:
        """Results in dataset order; offset paging is fine for a human paging through a table."""
        async with self.tables.session() as t:
            campaign = t.campaigns.get(campaign_id)
            page: list[StoredResult] = []
            if campaign is None or limit <= 0:
                return page
            skip = max(offset, 0)
            updated = campaign.fixed.kernel_version > 1
            for dataset_id in campaign.result_datasets:
                dataset = t.datasets[dataset_id]
                results = _newest(dataset) if updated else dataset.results
                if skip >= len(results):  # whole datasets at a time: O(datasets), not O(results)
                    skip -= len(results)
                    continue
                for result in results[skip:]:
                    page.append(stored_result(result, dataset))
                    if len(page) == limit:
                        return page
                skip = 0
            return page

    async def result(self, campaign_id: int, result_id: int) -> StoredResult | None:
        """One result, only if it belongs to this campaign."""
        async with self.tables.session() as t:
            result = t.results.get(result_id)
            if result is None or result.campaign_id != campaign_id:
                return None
            return stored_result(result, t.datasets[result.dataset_id])

    async def hosts(self, campaign_id: int) -> list[HostShare]:
        async with self.tables.session() as t:
            campaign = t.campaigns.get(campaign_id)
            shares = [] if campaign is None else sorted(campaign.hosts.items(), key=lambda item: -item[1][0])
            return [HostShare(host, int(n), ms / 1000.0) for host, (n, ms) in shares[:50]]

    async def throughput(self, campaign_id: int, start: float, width: float, buckets: int) -> list[int]:
        """Results per time bucket over [start, start + buckets * width), empty buckets as 0."""
        async with self.tables.session() as t:
            campaign = t.campaigns.get(campaign_id)
            times = [] if campaign is None else campaign.created_times
            counts = [0] * max(buckets, 0)
            if width <= 0:
                return counts
            # The times are sorted: each bucket's end is one binary search away, O(buckets log n).
            lo = bisect_left(times, start)
            for i in range(len(counts)):
                hi = bisect_left(times, start + (i + 1) * width, lo=lo)
                counts[i], lo = hi - lo, hi
            return counts

    async def sample_datasets(self, campaign_id: int, n: int) -> list[tuple[int, bytes]]:
        """The campaign's first n datasets as stored (msgpack): what the execute page runs."""
        async with self.tables.session() as t:
            campaign = t.campaigns.get(campaign_id)
            rows = [] if campaign is None else campaign.datasets[: max(n, 0)]
            return [(row.id, row.payload) for row in rows]
