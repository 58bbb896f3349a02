"""The verification part of the storage contract: votes, verdicts, worker records, on every backend."""

from __future__ import annotations

import msgpack

from distribute.models import ResultStatus, Verdicts
from distribute.storage import Storage
from tests.storage.conftest import finished, make_campaign


async def replicated(storage: Storage, n: int) -> tuple[int, list[int]]:
    """A replicated campaign of n datasets, each with two pending replicas: one says 1, the other 2."""
    campaign = await make_campaign(storage, n, replication=2)
    ids = [d.id for d in await storage.lease(campaign, n, "p", 30, replicated=True)]
    await storage.store_outcomes(
        [
            *(finished(i, campaign, 1, "w@10.0.0.1", status=ResultStatus.PENDING, identity="honest") for i in ids),
            *(finished(i, campaign, 2, "w@10.0.0.2", status=ResultStatus.PENDING, identity="ip:10.0.0.2") for i in ids),
        ],
        [],
        3,
    )
    return campaign, ids


async def test_replica_votes_are_the_pending_results_of_open_datasets(storage: Storage) -> None:
    campaign, ids = await replicated(storage, 2)
    votes = await storage.replica_votes([*ids, ids[0]])
    assert sorted(votes) == ids
    for dataset_id in ids:
        first, second = votes[dataset_id]
        assert first.result_id < second.result_id
        assert (first.payload, first.worker, first.address) == (msgpack.packb(1), "honest", "10.0.0.1")
        assert (second.payload, second.worker, second.address) == (msgpack.packb(2), "ip:10.0.0.2", "10.0.0.2")
    assert (await storage.counts(campaign)).pending_verification == 2


async def test_verdicts_settle_datasets_and_keep_worker_records(storage: Storage) -> None:
    campaign, ids = await replicated(storage, 2)
    votes = await storage.replica_votes(ids)
    settled, conflicted = ids
    good, bad = votes[settled]
    reopened = await storage.apply_verdicts(
        Verdicts(
            statuses=(
                (good.result_id, ResultStatus.CANONICAL),
                (bad.result_id, ResultStatus.INVALID),
                *((vote.result_id, ResultStatus.CONFLICT) for vote in votes[conflicted]),
            ),
            done=(settled,),
            conflicts=(conflicted,),
            agreed=("honest", "honest"),
            liars=("ip:10.0.0.2",),
        )
    )
    assert reopened == []
    assert await storage.replica_votes(ids) == {}  # nothing open any more
    counts = await storage.counts(campaign)
    assert (counts.done, counts.conflict, counts.verified, counts.flagged_workers) == (1, 1, 1, 1)
    assert (counts.pending_verification, counts.results) == (0, 3)
    records = {r.key: r for r in await storage.worker_records(["honest", "ip:10.0.0.2", "unknown"])}
    assert set(records) == {"honest", "ip:10.0.0.2"}
    assert (records["honest"].agreed, records["honest"].disagreed, records["honest"].flagged) == (2, 0, False)
    assert (records["ip:10.0.0.2"].agreed, records["ip:10.0.0.2"].disagreed) == (0, 1)
    assert records["ip:10.0.0.2"].flagged
    verified = await storage.results(campaign, verified=True)
    assert [(r.dataset_id, r.status) for r in verified] == [(settled, ResultStatus.CANONICAL)]
    assert await storage.worker_records([]) == []


async def test_a_liars_trusted_results_are_reopened(storage: Storage) -> None:
    campaign = await make_campaign(storage, 3, replication=2)
    leased = await storage.lease(campaign, 3, "p", 30, replicated=True)
    trusted = [finished(d.id, campaign, 7, "w@10.0.0.9", status=ResultStatus.TRUSTED, identity="sly") for d in leased]
    assert await storage.store_outcomes(trusted[:2], [], 3) == [leased[0].id, leased[1].id]
    assert (await storage.counts(campaign)).trusted == 2
    reopened = await storage.apply_verdicts(Verdicts(agreed=("sly",), liars=("sly",)))
    assert sorted(reopened) == [leased[0].id, leased[1].id]
    (record,) = await storage.worker_records(["sly"])
    assert (record.agreed, record.disagreed, record.flagged) == (0, 1, True)
    counts = await storage.counts(campaign)
    assert (counts.trusted, counts.done, counts.pending, counts.pending_verification) == (0, 0, 2, 2)
    again = await storage.lease(campaign, 3, "q", 30, replicated=True)
    assert sorted(d.id for d in again) == sorted(reopened)
    assert all(d.votes == (("sly", "10.0.0.9"),) for d in again)
