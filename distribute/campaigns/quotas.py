"""Per-account quotas checked before a campaign is created.

An account may have at most `quota_campaigns` campaigns (deleted ones too: they can be restored),
may create none once its results take `quota_result_bytes` or its campaigns have generated
`quota_datasets` datasets, and may have at most `quota_generators` campaigns generating at once.
The dataset quota is also enforced while generating (`distribute.work.generation`) and on each batch an
owner sends to an open campaign (`CampaignService.add_datasets`), and the trial
runs an account may start are counted per hour (`TrialLimiter`). A setting of 0 means no limit. Going over a quota raises `QuotaExceeded`, which names the quota and its setting.
"""

from __future__ import annotations

from ..auth import RateLimiter
from ..errors import ValidationError
from ..models import User
from ..settings import Settings
from ..storage import Storage

__all__ = ["QuotaExceeded", "TrialLimiter", "check_quotas"]


class QuotaExceeded(ValidationError):
    """The account is at one of its quotas; `status` is the HTTP status the API answers with.

    403 for what the account has stored (it must delete or reset something, or the operator raise
    the setting), 429 for what it runs at once (it may simply try again later).
    """

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


async def check_quotas(storage: Storage, settings: Settings, owner: User) -> None:
    """Raise `QuotaExceeded` if `owner` may not create one more campaign now."""
    limits = (settings.quota_campaigns, settings.quota_datasets, settings.quota_result_bytes, settings.quota_generators)
    if not any(limits):
        return
    usage = await storage.account_usage(owner.id, result_bytes=settings.quota_result_bytes > 0)
    if 0 < settings.quota_campaigns <= usage.campaigns:
        raise QuotaExceeded(
            f"campaign quota reached: this account has {usage.campaigns} campaigns (deleted ones count too)"
            f" and may have at most {settings.quota_campaigns} (setting quota_campaigns)"
        )
    if 0 < settings.quota_datasets <= usage.datasets:
        raise QuotaExceeded(
            f"dataset quota reached: this account's campaigns have generated {usage.datasets} datasets"
            f" and may generate at most {settings.quota_datasets} (setting quota_datasets)"
        )
    if 0 < settings.quota_result_bytes <= usage.result_bytes:
        raise QuotaExceeded(
            f"result storage quota reached: this account's results take {usage.result_bytes} bytes"
            f" and may take at most {settings.quota_result_bytes} (setting quota_result_bytes);"
            " resetting a campaign discards its results"
        )
    if 0 < settings.quota_generators <= usage.generating:
        raise QuotaExceeded(
            f"generator quota reached: {usage.generating} of this account's campaigns are generating datasets"
            f" and at most {settings.quota_generators} may at once (setting quota_generators); try again later",
            status=429,
        )


class TrialLimiter:
    """At most `quota_checks_per_hour` trial runs per account and hour, in this process.

    A refused campaign stores nothing, so the campaign quota never sees it; without this an owner
    could make the server's sandbox try one broken kernel after another for ever. Each trial is
    counted before it runs, whatever its verdict.
    """

    def __init__(self, per_hour: int) -> None:
        self._limiter = RateLimiter(per_hour, 3600.0) if per_hour > 0 else None

    def count(self, owner: User) -> None:
        """Count one trial for `owner`, or raise `QuotaExceeded` (429) if the hour's are used up."""
        if self._limiter is None:
            return
        key = f"trial:{owner.id}"
        wait = self._limiter.retry_after(key)
        if wait > 0:
            raise QuotaExceeded(
                f"trial quota reached: this account has started {self._limiter.limit} trial runs in the last hour"
                f" (setting quota_checks_per_hour); try again in {int(wait) + 1} s",
                status=429,
            )
        self._limiter.hit(key)
