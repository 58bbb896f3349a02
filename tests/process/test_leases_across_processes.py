"""Two `distribute serve` processes on one PostgreSQL: datasets one process leased ahead of demand go
back to storage when none of its own workers asks for them, so a worker of the other process can
finish the campaign. Without that, a process whose only worker left would hold them for as long as
it lives, renewing their leases, and the campaign would wait for ever."""

from __future__ import annotations

import pytest
import trio

from tests.conftest import SEED_ANSWER
from tests.process.test_presence import Pair, _create_campaign
from tests.support.protocol_client import work

pytestmark = pytest.mark.slow

LEASE_SECONDS = 3.0


@pytest.fixture(autouse=True)
def short_leases(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both processes hold what they lease for 3 s at a time (renewed while they want it)."""
    monkeypatch.setenv("DISTRIBUTE_LEASE_SECONDS", str(LEASE_SECONDS))


def ws_url(url: str) -> str:
    return url.replace("http://", "ws://") + "/ws"


async def test_datasets_leased_by_a_process_whose_worker_left_are_computed_through_the_other(pair: Pair) -> None:
    campaign_id = await _create_campaign(pair)
    # The second process leases the whole campaign (100 datasets, one refill) for a worker that
    # takes its first tasks and leaves without an answer: they go back into that process's queue.
    left = await work(ws_url(pair.urls[1]), campaign=campaign_id, vanish_after=0)
    assert left.done == [] and left.bye is None
    with trio.fail_after(60):  # a few lease periods; before the fix it never completed
        outcome = await work(ws_url(pair.urls[0]), campaign=campaign_id)
    assert outcome.bye == "complete"
    async with pair.api(0) as api:
        campaign = (await api.get(f"/api/campaigns/{campaign_id}")).json()
        rows = (await api.get(f"/api/campaigns/{campaign_id}/results", params={"format": "json"})).json()
    assert campaign["datasets"]["done"] == campaign["datasets"]["total"] == 100
    assert sorted(n for row in rows for n in row["result"]) == SEED_ANSWER
