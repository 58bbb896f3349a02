"""Dwell-time-aware hand-out through a real server: browsers whose visits are short next to the
campaign's tasks are given fewer tasks; headless workers are not; the API advises the owner.

The server learns from real protocol clients: a headless worker that answers 20 tasks of 1 s each
(what it reports, and what the server measures it held them for), and 20 browser visits of 0.3 s
(`dwell_min_samples` is 20 by default). The task timeout is 600 s, so no deadline interferes.
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import LiveServer
from tests.support.visits import answer_slowly, first_tasks, harness_client, headless_client, visits

SLOTS = 8


@pytest.fixture
async def learned(live_server: LiveServer) -> int:
    """A campaign whose 1 s tasks outlast its 0.3 s browser visits, with enough of both observed."""
    campaign_id = await live_server.create_campaign(task_timeout=600)
    await answer_slowly(live_server, campaign_id, count=20, seconds=1.0)
    await visits(live_server, campaign_id, count=20, stay=0.3)
    return campaign_id


async def test_a_browser_on_tasks_longer_than_visits_gets_fewer_tasks_than_its_slots(
    live_server: LiveServer, learned: int
) -> None:
    assert await first_tasks(live_server, learned, SLOTS, harness_client()) == 1


async def test_a_headless_worker_keeps_its_full_slots_on_the_same_campaign(
    live_server: LiveServer, learned: int
) -> None:
    assert await first_tasks(live_server, learned, SLOTS, headless_client()) == SLOTS


async def test_the_api_advises_splitting_datasets_when_tasks_outlast_visits(
    live_server: LiveServer, learned: int
) -> None:
    advice = (await live_server.campaign(learned))["advice"]
    match = re.fullmatch(
        r"median task 1\.0 s; half of the visits end within (\d\.\d) s: split datasets or checkpoint", advice
    )
    assert match is not None, advice
    assert 0.3 <= float(match.group(1)) < 1.0  # the visits stayed 0.3 s, plus the time to connect and leave


async def test_without_enough_visits_a_browser_keeps_its_slots_and_nothing_is_advised(
    live_server: LiveServer,
) -> None:
    campaign_id = await live_server.create_campaign(task_timeout=600)
    await answer_slowly(live_server, campaign_id, count=20, seconds=1.0)
    await visits(live_server, campaign_id, count=19, stay=0.3)
    assert (await live_server.campaign(campaign_id))["advice"] is None
    assert await first_tasks(live_server, campaign_id, SLOTS, harness_client()) == SLOTS  # itself the 20th visit
