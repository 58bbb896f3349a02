"""`CampaignService`: what an owner can do with campaigns, whichever adapter they come through.

Create (uploads checked, then the campaign and its spot checks stored in one transaction), show,
reset, delete and restore, export the results, and delete an account with its campaigns. Each use
case tells the running services what they must hear about it (the dispatcher's campaign list, the
generator), so the adapters (the JSON API, the console, the embed pages) never need to know who
that is. Ownership is checked here (`owned`, and by every change that takes a campaign id and a
user): another user's campaign is exactly like a missing one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from ..errors import Busy, Conflict, NotFound, ValidationError
from ..models import Campaign, CampaignState, CampaignStatus, Review, User, campaign_state
from ..settings import Settings
from ..storage import Storage
from ..work.dispatcher import Dispatcher
from ..work.generation import GenerationService
from .batches import packed_batch
from .export import ResultFormat, ResultsExport, export_results
from .quotas import QuotaExceeded, TrialLimiter, check_quotas
from .sources import CampaignFields, Uploads, checked_sources
from .versions import KernelUpdate, checked_update

__all__ = ["PAUSED_BY_OWNER", "REVIEW_REASON_MAX_CHARS", "AddressNotVerified", "CampaignService", "require_admin"]


class AddressNotVerified(QuotaExceeded):
    """The owner's e-mail address is not verified yet: a 403, a state of the account like a quota's."""


PAUSED_BY_OWNER = "paused by its owner"
CANCELLED_BY_OWNER = "cancelled by its owner"
BACKLOG_RETRY_SECONDS = 2  # Retry-After of a batch refused while the open campaign's backlog is full
_ACTIVE = (CampaignStatus.GENERATING, CampaignStatus.RUNNING)
KERNEL_ERRORS_SHOWN = 20
ERROR_GROUPS_SHOWN = 20  # messages; each with up to ERROR_EXAMPLES example datasets
ERROR_EXAMPLES = 5


class CampaignService:
    """The campaign use cases over storage, the dispatcher and the generator service.

    `workers_on(campaign_id)` counts the workers that serve the campaign, connected to any server
    process (the platform adds the other processes' presence rows to its gateway's count).
    `advice(campaign_id)` compares its task durations with its browser visits (this process's figures).
    """

    def __init__(
        self,
        storage: Storage,
        settings: Settings,
        dispatcher: Dispatcher,
        generation: GenerationService,
        workers_on: Callable[[int], int],
        advice: Callable[[int], str | None] = lambda campaign_id: None,
    ) -> None:
        self.storage = storage
        self.settings = settings
        self.dispatcher = dispatcher
        self.generation = generation
        self.workers_on = workers_on
        self.advice = advice
        self.trials = TrialLimiter(settings.quota_checks_per_hour)

    # ----------------------------------------------------------------------- reading

    async def get(self, campaign_id: int) -> Campaign | None:
        """Any campaign, deleted ones too (the embed pages decide what a visitor may see)."""
        return await self.storage.get_campaign(campaign_id)

    async def owner_of(self, campaign: Campaign) -> User | None:
        return await self.storage.get_user(campaign.owner_id)

    async def owned(self, campaign_id: int, user: User) -> Campaign:
        """The user's campaign (deleted ones too); anybody else's raises NotFound like a missing one."""
        campaign = await self.storage.get_campaign(campaign_id)
        if campaign is None or campaign.owner_id != user.id:
            raise NotFound(f"campaign {campaign_id} not found")
        return campaign

    async def list_for(self, user: User) -> list[Campaign]:
        """The user's campaigns that are not deleted."""
        return list(await self.storage.list_campaigns(user.id))

    async def state(self, campaign: Campaign) -> CampaignState:
        """The state every surface shows (see `campaign_state`): the embed card's too."""
        return campaign_state(campaign, await self.storage.counts(campaign.id))

    async def describe(self, campaign: Campaign) -> dict[str, Any]:
        """A campaign as the API and the console's live view show it, with its counts.

        `status` is the stored lifecycle status (a complete campaign stays "complete" even with
        failed datasets); `state` is what it means, and what the API, the CLI and the console show.
        """
        counts = await self.storage.counts(campaign.id)
        errors = await self.storage.kernel_errors(campaign.id, limit=KERNEL_ERRORS_SHOWN)
        groups = await self.storage.kernel_error_groups(campaign.id, ERROR_GROUPS_SHOWN, ERROR_EXAMPLES)
        state = campaign_state(campaign, counts)
        return {
            "id": campaign.id,
            "name": campaign.name,
            "description": campaign.description,
            "status": campaign.status,
            "deleted": campaign.deleted,
            "priority": campaign.priority,
            "weight": campaign.weight,
            "replication": campaign.replication,
            "comparator": bool(campaign.comparator),
            "task_timeout": campaign.task_timeout,
            "created": campaign.created.isoformat(),
            "generation_error": campaign.generation_error if campaign.status == CampaignStatus.FAILED else None,
            "state": {"key": state.key, "label": state.label, "tone": state.tone, "reason": state.reason},
            "datasets": {
                "total": counts.total,
                "pending": counts.pending,
                "leased": counts.leased,
                "done": counts.done,
                "failed": counts.failed,
            },
            "results": counts.results,
            "verification": {
                "verified": counts.verified,
                "trusted": counts.trusted,
                "pending": counts.pending_verification,
                "conflict": counts.conflict,
                "flagged_workers": counts.flagged_workers,
            },
            "errors": counts.errors,
            "workers": self.workers_on(campaign.id),
            "compute_seconds": round(counts.compute_seconds, 3),
            "kernel_errors": [
                {"dataset_id": e.dataset_id, "message": e.message, "stack": e.stack, "count": e.count} for e in errors
            ],
            "kernel_error_groups": [
                {
                    "message": g.message,
                    "count": g.count,
                    "datasets": g.datasets,
                    "first_seen": g.first_seen.isoformat(),
                    "last_seen": g.last_seen.isoformat(),
                    "examples": list(g.examples),
                    "example_numbers": list(g.example_numbers),
                    "stack": g.stack,
                }
                for g in groups
            ],
            "advice": self.advice(campaign.id),
            "open": campaign.is_open,
            "kernel_version": campaign.kernel_version,
            "review": {"state": campaign.review, "reason": campaign.review_reason},
        }

    def export(
        self,
        campaign: Campaign,
        fmt: ResultFormat,
        *,
        include_empty: bool = False,
        verified: bool = False,
        every_version: bool = False,
    ) -> ResultsExport:
        """The streamed download of the campaign's results (the API's and the console's, byte for byte)."""
        return export_results(
            self.storage, campaign.id, fmt, include_empty=include_empty, verified=verified, every_version=every_version
        )

    # ----------------------------------------------------------------------- changing

    async def create(
        self, owner: User, fields: CampaignFields, uploads: Uploads, default_name: str, *, skip_check: bool = False
    ) -> Campaign:
        """Check the uploaded sources, try them in the sandbox unless `skip_check`, and create the campaign;
        ValidationError names what is wrong (`SourceError` the upload at fault, `QuotaExceeded` a quota)."""
        if self.settings.verifies_email and not owner.verified:
            raise AddressNotVerified(
                f"the e-mail address {owner.email} must be verified before this account creates campaigns:"
                " follow the link in the verification mail (the console's account page sends a new one)"
            )
        await check_quotas(self.storage, self.settings, owner)
        if not skip_check and self.settings.check_datasets > 0:
            self.trials.count(owner)
        sources = await checked_sources(
            uploads, self.settings, skip_check=skip_check, task_timeout=fields.task_timeout, open_campaign=fields.open
        )
        chosen = {name: getattr(fields, name) for name in CampaignFields.model_fields}  # not a form's files
        chosen |= {
            "name": fields.name or default_name,
            "task_timeout": fields.task_timeout or self.settings.task_timeout,
            "is_open": chosen.pop("open"),
        }
        return await self.store(owner, **asdict(sources), **chosen)

    async def store(self, owner: User, *, spot_checks: Sequence[tuple[bytes, bytes]] = (), **fields: Any) -> Campaign:
        """Store a campaign whose sources are trusted or checked already, and start serving it: to every
        worker if it needs no review (an admin's, or `campaign_review` off), else to those that name it."""
        reviewed = owner.admin or self.settings.campaign_review == "off"
        fields.setdefault("review", Review.APPROVED if reviewed else Review.PENDING)
        campaign = await self.storage.create_campaign(owner.id, spot_checks=spot_checks, **fields)
        await self.dispatcher.refresh_campaigns()
        self.generation.start(campaign)
        return campaign

    async def reset(self, campaign_id: int, user: User) -> Campaign:
        """Discard every result and error of the user's campaign: all datasets are pending again."""
        campaign = await self.owned(campaign_id, user)
        if campaign.status == CampaignStatus.CANCELLED:  # it would lose its results and never compute them again
            raise Conflict(f"campaign {campaign_id} is cancelled: its results are kept as they are")
        await self.storage.reset_campaign(campaign.id)
        await self.dispatcher.refresh_campaigns()
        self.dispatcher.notify_new_datasets(campaign.id)
        return await self.owned(campaign_id, user)

    async def update_kernel(self, campaign_id: int, user: User, update: KernelUpdate) -> Campaign:
        """Make the user's campaign's kernel (and static dataset) version N+1, once checked like at creation
        (`versions.checked_update`; refused: nothing changes). Workers get the new campaign frame before
        their next task (this process now, the others at their next refresh); `recompute` sends the
        datasets done under older versions round again."""
        campaign = await self.owned(campaign_id, user)
        if not update.skip_check and self.settings.check_datasets > 0:
            self.trials.count(user)
        kernel, static = await checked_update(self.storage, self.settings, campaign, update)
        updated = await self.storage.update_kernel(campaign.id, kernel, static, recompute=update.recompute)
        await self.dispatcher.refresh_campaigns()
        if update.recompute:
            self.dispatcher.notify_new_datasets(campaign.id)
        return updated

    async def resume(self, campaign_id: int, user: User) -> Campaign:
        """Resume the user's paused campaign: its early-failure watch starts afresh (so it does not
        pause again at once), and its generator runs on from where it stopped, as after a restart
        (it then becomes running once the generator is exhausted). An open campaign is generating
        again (its owner's datasets, no generator), a closed one running. `Conflict` if not paused."""
        campaign = await self.owned(campaign_id, user)
        has_more = bool(campaign.generator) or campaign.is_open
        status = CampaignStatus.GENERATING if has_more else CampaignStatus.RUNNING
        resumed = await self.storage.change_status(campaign.id, (CampaignStatus.PAUSED,), status)
        if resumed is None:
            raise Conflict(f"campaign {campaign_id} is {campaign.status}, not paused")
        await self.dispatcher.refresh_campaigns()
        if resumed.generator:
            self.generation.start(resumed)
        self.dispatcher.notify_new_datasets(campaign.id)
        return await self.owned(campaign_id, user)

    async def pause(self, campaign_id: int, user: User) -> Campaign:
        """The owner pauses a generating or running campaign: no task of it is handed out any more
        (here at once, in other server processes from their next refill), its workers hear "paused"
        and move on; it keeps everything and `resume` serves it again. `Conflict` otherwise."""
        campaign = await self.owned(campaign_id, user)
        if campaign.status not in _ACTIVE or not await self.dispatcher.pause(campaign.id, PAUSED_BY_OWNER):
            raise Conflict(f"campaign {campaign_id} is {campaign.status}: only a generating or running one pauses")
        return await self.owned(campaign_id, user)

    async def cancel(self, campaign_id: int, user: User) -> Campaign:
        """The owner stops a campaign for good: it keeps its results but is never served (nor resumed,
        nor open) again; its workers hear "cancelled" and move on. `Conflict` for a finished one."""
        campaign = await self.owned(campaign_id, user)
        stopped = CampaignStatus.CANCELLED
        if campaign.status in _ACTIVE and await self.dispatcher.pause(campaign.id, CANCELLED_BY_OWNER, stopped):
            return await self.owned(campaign_id, user)
        cancelled = await self.storage.change_status(campaign.id, (CampaignStatus.PAUSED,), stopped, CANCELLED_BY_OWNER)
        if cancelled is None:
            raise Conflict(f"campaign {campaign_id} is {campaign.status}: it cannot be cancelled")
        await self.dispatcher.refresh_campaigns()
        if (queue := self.dispatcher.queue(campaign.id)) is not None and queue.complete:
            queue.campaign = cancelled  # its workers hear "cancelled" now, no longer "paused"
        return cancelled

    async def add_datasets(self, campaign_id: int, user: User, body: bytes, content_type: str) -> dict[str, int]:
        """Add a batch (JSON or msgpack, see `batches`) to the user's open campaign; the dispatcher
        learns of it at once. Answers `{"added", "first", "last", "total"}` (the datasets' numbers).

        `Conflict` if the campaign is not open, `Busy` while more than `open_backlog` of its datasets
        wait to be handed out, `QuotaExceeded` over `max_datasets` or `quota_datasets`,
        `ValidationError` for a batch that is not well-formed: a refused batch stores nothing."""
        campaign = await self.owned(campaign_id, user)
        if not campaign.is_open:
            raise Conflict(f"campaign {campaign_id} is not open: it takes no datasets ({campaign.status})")
        settings = self.settings
        payloads = packed_batch(
            body, content_type, max_datasets=settings.max_upload_batch, max_dataset_bytes=settings.max_dataset_bytes
        )
        backlog = await self.storage.pending_count(campaign.id, at_most=settings.open_backlog + 1)
        if backlog > settings.open_backlog:
            raise Busy(
                f"campaign {campaign_id} has more than {settings.open_backlog} datasets waiting for workers"
                f" (setting open_backlog); send more in {BACKLOG_RETRY_SECONDS} s",
                BACKLOG_RETRY_SECONDS,
            )
        await self._check_dataset_limits(campaign, len(payloads))
        total = await self.storage.add_open_datasets(campaign.id, payloads)
        if total is None:
            raise Conflict(f"campaign {campaign_id} was closed or stopped: it takes no more datasets")
        self.dispatcher.notify_new_datasets(campaign.id)
        return {"added": len(payloads), "first": total - len(payloads) + 1, "last": total, "total": total}

    async def _check_dataset_limits(self, campaign: Campaign, adding: int) -> None:
        if campaign.generated + adding > self.settings.max_datasets:
            raise QuotaExceeded(
                f"campaign {campaign.id} has {campaign.generated} datasets; {adding} more would pass the limit of"
                f" {self.settings.max_datasets} per campaign (setting max_datasets)"
            )
        quota = self.settings.quota_datasets
        if quota:
            usage = await self.storage.account_usage(campaign.owner_id, result_bytes=False)
            if usage.datasets + adding > quota:
                raise QuotaExceeded(
                    f"dataset quota exceeded: this account's campaigns have {usage.datasets} datasets, this batch"
                    f" would add {adding} more, and at most {quota} are allowed (setting quota_datasets)"
                )

    async def close(self, campaign_id: int, user: User) -> Campaign:
        """No more datasets will come: the open campaign is running (then complete once every dataset is
        answered). Closing a closed one changes nothing; a campaign that never was open is a `Conflict`."""
        campaign = await self.owned(campaign_id, user)
        if campaign.generator or campaign.status == CampaignStatus.CANCELLED:
            raise Conflict(f"campaign {campaign_id} is not an open campaign ({campaign.status})")
        await self.storage.close_campaign(campaign.id)
        await self.dispatcher.refresh_campaigns()  # a campaign with everything answered completes here
        return await self.owned(campaign_id, user)

    async def delete(self, campaign_id: int, user: User) -> None:
        """Stop serving the user's campaign (it can be restored: nothing is removed)."""
        await self._set_deleted(await self.owned(campaign_id, user), True)

    async def restore(self, campaign_id: int, user: User) -> None:
        await self._set_deleted(await self.owned(campaign_id, user), False)

    async def delete_account(self, user: User) -> None:
        """Delete the user's account with everything in it, campaigns first, so that no worker or
        generator is mid-way when the rows go."""
        for campaign in await self.storage.list_campaigns(user.id):
            await self._set_deleted(campaign, True)
        await self.storage.accounts.delete_account(user.id)
        await self.dispatcher.refresh_campaigns()

    async def _set_deleted(self, campaign: Campaign, deleted: bool) -> None:
        await self.storage.set_deleted(campaign.id, deleted)
        await self.dispatcher.refresh_campaigns()

    # ----------------------------------------------------------------------- review (admins only)

    async def review(self, campaign_id: int, admin: User, review: str, reason: str = "") -> Campaign:
        """An admin approves (or rejects, with a reason its owner sees) a campaign; every server process
        serves it accordingly from its next refresh, this one at once. A non-admin gets `NotFound`, as
        for every admin use case: the admin role is not even admitted to exist."""
        require_admin(admin)
        reason = reason.strip()
        if review == Review.REJECTED and not reason:
            raise ValidationError("a rejection needs a reason: its owner reads it")
        if len(reason) > REVIEW_REASON_MAX_CHARS:
            raise ValidationError(f"the reason has more than {REVIEW_REASON_MAX_CHARS} characters")
        if await self.storage.get_campaign(campaign_id) is None:
            raise NotFound(f"campaign {campaign_id} not found")
        campaign = await self.storage.set_review(campaign_id, review, reason)
        await self.dispatcher.refresh_campaigns()  # a rejected one leaves the queues; an approved one is learnt
        self.dispatcher.notify_new_datasets(campaign_id)  # waiting workers look again
        return campaign

    async def approve(self, campaign_id: int, admin: User) -> Campaign:
        return await self.review(campaign_id, admin, Review.APPROVED)

    async def reject(self, campaign_id: int, admin: User, reason: str) -> Campaign:
        return await self.review(campaign_id, admin, Review.REJECTED, reason)

    async def awaiting_review(self, admin: User) -> list[Campaign]:
        """Campaigns (not deleted) whose review is pending, oldest first."""
        require_admin(admin)
        pending = [c for c in await self.storage.list_campaigns() if c.review == Review.PENDING]
        return sorted(pending, key=lambda c: c.id)


REVIEW_REASON_MAX_CHARS = 1000


def require_admin(user: User | None) -> User:
    """The user if an admin; else `NotFound`, exactly like a page that does not exist."""
    if user is None or not user.admin:
        raise NotFound("not found")
    return user
