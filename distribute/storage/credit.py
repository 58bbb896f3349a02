"""Volunteers' credit: the `CreditStore` protocol (`storage.credit`), its records, and the one tally both
backends use to turn per-volunteer sums into a leaderboard.

Credit is read from the results themselves, by an aggregate over the result table, so it always
agrees with the results' current status: a replica counts once the quorum verified it (canonical or
agreed), an unreplicated answer at once (accepted, or trusted), an invalid or pending one never, and a
trusted answer that goes back to pending when its worker is caught lying stops counting at that moment.
The group commit and the verdicts change statuses in their own batched transactions; credit needs no
write of its own on those hot paths. Results carry the worker's identity (the broker's random id, or
"ip:" + address for a worker that sends none), the host it reported (a claim, never counted), and the
registered site the server verified it was embedded on (or none): a site's board counts only the latter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..models import ResultStatus

__all__ = ["CREDITED", "CampaignCredit", "Credit", "CreditStore", "Leaderboard", "LeaderboardEntry", "tally"]

# The statuses that earn credit: verified (canonical, agreed), trusted, or accepted without replication.
CREDITED = (ResultStatus.ACCEPTED, ResultStatus.CANONICAL, ResultStatus.AGREED, ResultStatus.TRUSTED)


@dataclass(frozen=True, slots=True)
class CampaignCredit:
    campaign_id: int
    seconds: float


@dataclass(frozen=True, slots=True)
class Credit:
    """Compute seconds credited to some identities: in all, and per campaign (most first, then by id)."""

    seconds: float
    campaigns: tuple[CampaignCredit, ...]


@dataclass(frozen=True, slots=True)
class LeaderboardEntry:
    name: str  # the account's display name: only accounts that chose to be listed have an entry
    seconds: float


@dataclass(frozen=True, slots=True)
class Leaderboard:
    """The credit of a campaign or a site: listed volunteers by name, everyone else only as a count."""

    seconds: float  # every credited second, named or not
    named: tuple[LeaderboardEntry, ...]  # most first, then by name
    anonymous: int  # volunteers not listed by name: each unclaimed identity, and each unlisted account
    anonymous_seconds: float


class CreditStore(Protocol):
    """Credit per identity, per registered site and per campaign; claims of identities by accounts."""

    async def credit(self, identities: Sequence[str]) -> Credit:
        """The credit of those identities together (statuses in `CREDITED`), per campaign.

        Unknown identities add nothing; no identities give zero credit.
        """
        ...

    async def leaderboard(
        self, *, campaign_id: int | None = None, site_id: int | None = None, limit: int = 20
    ) -> Leaderboard:
        """The credited results of one campaign, or of one registered site, as a board.

        A site's results are those attributed to it (the result's `site`: the server verified the broker
        page of that site); the host a worker reports is only its claim and never puts a result on a
        site's board. Both filters together give that campaign's results on that site.

        Volunteers are identities; an identity claimed by an account counts as that account (all its
        identities together). Accounts listed (`set_listed`) with a non-empty display name are named,
        at most `limit` of them (the rest count as anonymous); everyone else is only counted. Results
        with no identity add to `seconds` but count as nobody.
        """
        ...

    async def claim(self, user_id: int, identity: str) -> bool:
        """Let the account own that identity's credit (past and future); False if another account owns it.

        Claiming an identity the account already owns changes nothing and returns True.
        """
        ...

    async def claimed(self, user_id: int) -> list[str]:
        """The identities the account claimed, in claim order."""
        ...

    async def set_listed(self, user_id: int, listed: bool) -> None:
        """Whether the account's display name appears on leaderboards (not listed unless it chose to)."""
        ...

    async def listed(self, user_id: int) -> bool:
        """Whether the account chose to be listed by name."""
        ...


def tally(rows: Iterable[tuple[int | None, str | None, float]], names: Mapping[int, str], limit: int) -> Leaderboard:
    """A leaderboard from (claiming account or None, identity or None, seconds) rows and the display
    names of the accounts that chose to be listed."""
    total = 0.0
    per_account: dict[int, float] = {}
    anonymous: dict[str, float] = {}
    for user, identity, seconds in rows:
        total += seconds
        if user is not None:
            per_account[user] = per_account.get(user, 0.0) + seconds
        elif identity:
            anonymous[f"id:{identity}"] = anonymous.get(f"id:{identity}", 0.0) + seconds
    named: list[LeaderboardEntry] = []
    for user, seconds in per_account.items():
        if names.get(user):
            named.append(LeaderboardEntry(names[user], seconds))
        else:
            anonymous[f"user:{user}"] = seconds
    named.sort(key=lambda entry: (-entry.seconds, entry.name))
    for entry in named[limit:]:
        anonymous[f"name:{entry.name}:{len(anonymous)}"] = entry.seconds
    return Leaderboard(total, tuple(named[:limit]), len(anonymous), sum(anonymous.values()))
