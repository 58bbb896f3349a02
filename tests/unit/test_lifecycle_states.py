"""`models.campaign_state` for the owner's lifecycle: an open campaign reads "open" or "waiting for
datasets", never complete; a cancelled one is a warning with its reason."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from distribute.models import Campaign, CampaignCounts, CampaignStatus, campaign_state

CAMPAIGN = Campaign(
    id=1, owner_id=1, name="c", description="", kernel="k", static_dataset="", generator="", priority=0,
    weight=1.0, replication=1, task_timeout=5.0, status=CampaignStatus.GENERATING, generation_error=None,
    deleted=False, created=datetime.now(UTC), content_hash="h", generated=0, compute_seconds=0.0, is_open=True,
)  # fmt: skip


def counts(pending: int = 0, leased: int = 0, done: int = 0) -> CampaignCounts:
    return CampaignCounts(pending + leased + done, pending, leased, done, 0, done, 0, 0.0)


def test_an_open_campaign_with_nothing_to_hand_out_is_waiting_for_datasets() -> None:
    state = campaign_state(CAMPAIGN, counts(done=5))
    assert (state.key, state.label, state.tone) == ("generating", "waiting for datasets", "active")


def test_an_open_campaign_with_datasets_waiting_reads_open() -> None:
    assert campaign_state(CAMPAIGN, counts(pending=3)).label == "open"


def test_a_closed_campaign_reads_its_status() -> None:
    closed = replace(CAMPAIGN, is_open=False, status=CampaignStatus.RUNNING)
    assert campaign_state(closed, counts(pending=3)).label == "running"


def test_a_cancelled_campaign_is_a_warning_with_its_reason() -> None:
    cancelled = replace(
        CAMPAIGN, is_open=False, status=CampaignStatus.CANCELLED, generation_error="cancelled by its owner"
    )
    state = campaign_state(cancelled, counts(done=2))
    assert (state.key, state.label, state.tone, state.reason) == (
        "cancelled", "cancelled", "warning", "cancelled by its owner"
    )  # fmt: skip
