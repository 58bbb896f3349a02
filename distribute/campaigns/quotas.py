"""Per-account quotas checked before a campaign is created.

An account may have at most `quota_campaigns` campaigns (deleted ones too: they can be restored),
may create none once its results take `quota_result_bytes` or its campaigns have generated
`quota_datasets` datasets, and may have at most `quota_generators` campaigns generating at once.
The dataset quota is also enforced while generating (`distribute.work.generation`). A setting of 0
means no limit. Going over a quota raises `QuotaExceeded`, which names the quota and its setting.
"""

from __future__ import annotations

from ..errors import ValidationError
from ..models import User
from ..settings import Settings
from ..storage import Storage

__all__ = ["QuotaExceeded", "check_quotas"]


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
