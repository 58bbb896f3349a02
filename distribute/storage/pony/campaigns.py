"""Campaign rows on Pony: creation (with spot checks), status, reset, completion, appending datasets.

Module-level functions, each run by `Sessions` in a storage thread inside its own `db_session`.
The per-dataset hot paths are in `distribute.storage.pony.sql`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from typing import Any

from pony.orm import desc, select

from ...errors import LeaseLost, NotFound
from ...models import Campaign, CampaignStatus, DatasetState, Review
from ..hashing import content_hash
from . import sql as hot
from .accounts import utcnow
from .generator_leases import holds
from .sql import SqlDialect
from .verdicts import insert_spot_checks

__all__ = [
    "add_datasets",
    "add_open_datasets",
    "change_status",
    "close_campaign",
    "complete_if_done",
    "create_campaign",
    "get_campaign",
    "list_campaigns",
    "pending_count",
    "reset_campaign",
    "set_deleted",
    "set_status",
    "to_campaign",
    "update_kernel",
]

_ACTIVE = (CampaignStatus.GENERATING, CampaignStatus.RUNNING)
_REJECTED = Review.REJECTED  # a plain name: Pony translates the query lambda, not attribute chains


def _campaign(row: Any) -> Campaign:
    return Campaign(
        id=row.id,
        owner_id=row.owner.id,
        name=row.name,
        description=row.description or "",
        kernel=row.kernel,
        static_dataset=row.static_dataset or "",
        generator=row.generator,
        priority=row.priority,
        weight=row.weight,
        replication=row.replication,
        task_timeout=row.task_timeout,
        status=row.status,
        generation_error=row.generation_error,
        deleted=row.deleted,
        created=row.created.replace(tzinfo=UTC),
        content_hash=row.content_hash,
        generated=row.generated,
        compute_seconds=row.compute_ms / 1000.0,
        comparator=row.comparator or "",
        is_open=bool(row.is_open),
        kernel_version=row.kernel_version,
        review=row.review,
        review_reason=row.review_reason or "",
    )


def _campaign_row(sql: SqlDialect, campaign_id: int, *, lock: bool = True) -> Any:
    # Locked (SELECT … FOR UPDATE on PostgreSQL) before the ORM changes it: another server process
    # changing the row meanwhile would make Pony's optimistic check fail the whole call.
    entity = sql.e["Campaign"]
    row = entity.get_for_update(id=campaign_id) if lock else entity.get(id=campaign_id)
    if row is None:
        raise NotFound(f"campaign {campaign_id} does not exist")
    return row


def create_campaign(
    sql: SqlDialect, owner_id: int, spot_checks: Sequence[tuple[bytes, bytes]], fields: dict[str, Any]
) -> Campaign:
    row = sql.e["Campaign"](
        owner=sql.e["User"][owner_id],
        status=CampaignStatus.GENERATING,
        created=utcnow(),
        content_hash=content_hash(fields["kernel"], fields.get("static_dataset", "")),
        **fields,
    )
    row.flush()  # the id, for the spot checks' rows, written in the same transaction
    insert_spot_checks(sql, row.id, spot_checks)
    return _campaign(row)


def get_campaign(sql: SqlDialect, campaign_id: int) -> Campaign | None:
    row = sql.e["Campaign"].get(id=campaign_id)
    return _campaign(row) if row else None


def list_campaigns(sql: SqlDialect, owner_id: int | None, active_only: bool) -> list[Campaign]:
    query = select(c for c in sql.e["Campaign"] if not c.deleted)
    if owner_id is not None:
        query = query.filter(lambda c: c.owner.id == owner_id)
    if active_only:
        query = query.filter(lambda c: c.status in _ACTIVE and c.review != _REJECTED)
    return [_campaign(row) for row in query.order_by(lambda c: desc(c.id))]


def set_deleted(sql: SqlDialect, campaign_id: int, deleted: bool) -> None:
    _campaign_row(sql, campaign_id).deleted = deleted


def set_status(sql: SqlDialect, campaign_id: int, status: str, error: str | None) -> None:
    row = _campaign_row(sql, campaign_id)
    row.status = status
    row.generation_error = error


def reset_campaign(sql: SqlDialect, campaign_id: int) -> None:
    # Not locked: store_outcomes locks datasets, then the campaign; taking them the other way
    # round here could deadlock with another process. Raw SQL only, so no optimistic check.
    _campaign_row(sql, campaign_id, lock=False)
    sql.execute("DELETE FROM result WHERE campaign = ?", (campaign_id,))
    sql.execute("DELETE FROM kernel_error WHERE campaign = ?", (campaign_id,))
    sql.execute(
        "UPDATE dataset SET state = ?, errors = 0, lease_owner = NULL, lease_until = NULL, checkpoint = NULL"
        " WHERE campaign = ? AND state <> ?",
        (DatasetState.PENDING, campaign_id, DatasetState.SPOT),
    )
    sql.execute(
        "UPDATE campaign SET compute_ms = 0, status = CASE WHEN status = ? THEN ? ELSE status END WHERE id = ?",
        (CampaignStatus.COMPLETE, CampaignStatus.RUNNING, campaign_id),
    )


def update_kernel(sql: SqlDialect, campaign_id: int, kernel: str, static_dataset: str, recompute: bool) -> Campaign:
    # Like reset_campaign: raw SQL (the ORM reads the row only afterwards, so it sees the changes), and
    # the campaign row is not locked before the datasets. The version is raised in the statement itself,
    # so two concurrent updates make two versions.
    if not sql.query("SELECT id FROM campaign WHERE id = ?", (campaign_id,)):
        raise NotFound(f"campaign {campaign_id} does not exist")
    sql.execute(
        "UPDATE campaign SET kernel = ?, static_dataset = ?, content_hash = ?, kernel_version = kernel_version + 1,"
        " kernel_floor = CASE WHEN ? THEN kernel_version + 1 ELSE kernel_floor END WHERE id = ?",
        (kernel, static_dataset, content_hash(kernel, static_dataset), recompute, campaign_id),
    )
    if recompute:
        sql.execute(
            "UPDATE dataset SET state = ?, errors = 0, lease_owner = NULL, lease_until = NULL"
            " WHERE campaign = ? AND state IN (?, ?)",
            (DatasetState.PENDING, campaign_id, DatasetState.DONE, DatasetState.FAILED),
        )
        sql.execute(
            "UPDATE campaign SET status = ? WHERE id = ? AND status = ?",
            (CampaignStatus.RUNNING, campaign_id, CampaignStatus.COMPLETE),
        )
    return _campaign(sql.e["Campaign"][campaign_id])


def complete_if_done(sql: SqlDialect, campaign_id: int) -> bool:
    row = _campaign_row(sql, campaign_id)
    if row.status == CampaignStatus.COMPLETE:
        return True
    if row.status != CampaignStatus.RUNNING:
        return False
    open_rows = sql.query(
        "SELECT id FROM dataset WHERE campaign = ? AND state IN (?, ?) LIMIT 1",
        (campaign_id, DatasetState.PENDING, DatasetState.LEASED),
    )
    if open_rows:
        return False
    row.status = CampaignStatus.COMPLETE
    return True


def add_datasets(
    sql: SqlDialect, campaign_id: int, payloads: Sequence[bytes], exhausted: bool, generator: str | None
) -> int:
    if generator is not None and not holds(sql, campaign_id, generator):
        raise LeaseLost(f"campaign {campaign_id}: the generator lease of {generator} has expired")
    row = _campaign_row(sql, campaign_id)
    hot.insert_datasets(sql, campaign_id, row.generated, payloads)
    row.generated += len(payloads)
    if exhausted and row.status == CampaignStatus.GENERATING:
        row.status = CampaignStatus.RUNNING
    generated: int = row.generated
    return generated


def pending_count(sql: SqlDialect, campaign_id: int, at_most: int) -> int:
    # A bounded count costs the same at any campaign size; COUNT(*) of every pending row was
    # O(N) per generated batch, O(N^2) over a campaign.
    rows = sql.query(
        "SELECT COUNT(*) FROM (SELECT 1 FROM dataset WHERE campaign = ? AND state = ? LIMIT ?) AS bounded",
        (campaign_id, DatasetState.PENDING, at_most),
    )
    count: int = rows[0][0]
    return count


def change_status(
    sql: SqlDialect, campaign_id: int, allowed: Sequence[str], status: str, reason: str | None
) -> Campaign | None:
    row = _campaign_row(sql, campaign_id)
    if row.status not in allowed:
        return None
    row.status = status
    row.generation_error = reason
    if status == CampaignStatus.CANCELLED:
        row.is_open = False  # a cancelled campaign takes nothing more
    return _campaign(row)


def add_open_datasets(sql: SqlDialect, campaign_id: int, payloads: Sequence[bytes]) -> int | None:
    row = _campaign_row(sql, campaign_id)
    if not row.is_open or row.deleted or row.status not in (*_ACTIVE, CampaignStatus.PAUSED):
        return None
    hot.insert_datasets(sql, campaign_id, row.generated, payloads)
    row.generated += len(payloads)
    generated: int = row.generated
    return generated


def close_campaign(sql: SqlDialect, campaign_id: int) -> bool:
    row = _campaign_row(sql, campaign_id)
    if not row.is_open:
        return False
    row.is_open = False
    if row.status == CampaignStatus.GENERATING:
        row.status = CampaignStatus.RUNNING
    return True


to_campaign = _campaign  # for the backend's other modules
