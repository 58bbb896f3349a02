"""A browser that leaves, pauses, stops or throttles down hands its tasks back at once (`release`, v1.1).

Every campaign here has a task timeout of 300 s, and every hand-over must happen within 20 s: a dataset
that reaches another worker in time got there because it was handed back, not because its deadline
passed (on a quiet machine it takes well under 2 s; the bound is loose so that a busy machine cannot
fail the test, which is about the mechanism, not its speed). The server side is watched directly: each `release` frame the gateway receives is recorded
with the tasks the connection held before and after it, and the tasks each connection holds are read
from the gateway's sessions. A browser that closes its socket without a release also has its tasks
requeued, but is charged with them (its address's slot allowance shrinks): the tests check that
nothing was charged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import trio

from distribute import protocol as p
from tests.browser.conftest import Embedding, Visit, busy_kernel, in_every_engine, outcome
from tests.conftest import LiveServer

TASK_TIMEOUT = 300  # seconds: far beyond every wait below
HAND_OVER = 20  # seconds within which released tasks must reach the next worker (a tenth of the timeout)


@dataclass(frozen=True)
class Handed:
    """One `release` frame the gateway received: from which connection, and what it held around it."""

    session: int
    release: p.Release
    held_before: frozenset[int]
    held_after: frozenset[int]


def record_releases(server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> list[Handed]:
    gateway = server.platform.gateway
    handed: list[Handed] = []
    hand_back = gateway._hand_back

    def recording(session: Any, limits: Any, message: p.Release) -> None:
        before = frozenset(session.held)
        hand_back(session, limits, message)
        handed.append(Handed(session.id, message, before, frozenset(session.held)))

    monkeypatch.setattr(gateway, "_hand_back", recording)
    return handed


def held(server: LiveServer) -> dict[int, frozenset[int]]:
    """The tasks (dataset ids) each connection holds, by connection."""
    return {sid: frozenset(session.held) for sid, session in server.platform.gateway.sessions.items()}


async def poll(condition: Callable[[], bool], timeout: float = 30) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.01)


def wait_computing(page: Visit, count: int) -> None:
    page.broker().wait_for_function(f"() => document.body.dataset.computing === '{count}'", timeout=30_000)


def pretend_cores(page: Visit, cores: int) -> None:
    """The broker sizes its workers by navigator.hardwareConcurrency: make it `cores` and start over."""
    page.context.add_init_script(
        f"Object.defineProperty(Navigator.prototype, 'hardwareConcurrency', {{get: () => {cores}}});"
    )
    page.page.reload()
    page.page.frame_locator("iframe").first.locator("#contribute").wait_for(state="visible")


async def holding_all(embedding: Embedding, page: Visit, datasets: int) -> frozenset[int]:
    """Click Contribute on `page` and wait until its connection holds all `datasets` and computes one."""
    server = embedding.server
    await embedding.browser.run(page.click, "contribute")
    await poll(lambda: any(len(ids) == datasets for ids in held(server).values()))
    await embedding.browser.run(wait_computing, page, 1)
    (ids,) = [ids for ids in held(server).values() if ids]
    return ids


async def waiting(embedding: Embedding, page: Visit) -> int:
    """Click Contribute on a second page and wait until it is connected with nothing to do; its connection."""
    before = set(held(embedding.server))
    await embedding.browser.run(page.click, "contribute")
    await embedding.browser.run(page.wait_state, "waiting")
    await poll(lambda: len(set(held(embedding.server)) - before) == 1)
    (session,) = set(held(embedding.server)) - before
    return session


async def assert_handed_over(server: LiveServer, ids: frozenset[int], to: int) -> None:
    """Within HAND_OVER seconds, connection `to` holds every one of `ids`."""
    with trio.fail_after(HAND_OVER):
        while not ids <= held(server).get(to, frozenset()):
            await trio.sleep(0.01)


async def assert_exactly_once(server: LiveServer, campaign: int, datasets: int) -> None:
    """The campaign completes with one right answer per dataset, no kernel error, none charged to anybody."""
    await server.wait_complete(campaign, timeout=90)
    rows = await server.results(campaign, include_empty=True)
    assert len(rows) == len({row["dataset_id"] for row in rows}) == datasets
    stored = await outcome(server, campaign)
    assert stored.results == {i: i * 2 for i in range(datasets)}
    assert stored.errors == [] and stored.campaign["errors"] == 0
    assert len(server.platform.gateway.allowance) == 0  # no address was charged with a dropped task


async def hand_over(embedding: Embedding, monkeypatch: pytest.MonkeyPatch, action: Callable[[Visit], Any]) -> Handed:
    """A page computes both datasets of a campaign (one computing, one prefetched) while a second page
    waits with nothing to do; `action(first page)` runs on the browser thread; the second page's
    connection must then hold both datasets within HAND_OVER seconds. Then the campaign completes
    exactly. Returns the one `release` frame the server received, from the first page."""
    server, browser = embedding.server, embedding.browser
    handed = record_releases(server, monkeypatch)
    campaign = await embedding.campaign(busy_kernel(2000), 2, task_timeout=TASK_TIMEOUT)
    async with embedding.visit(campaign) as first, embedding.visit(campaign) as second:
        ids = await holding_all(embedding, first, 2)
        other = await waiting(embedding, second)
        await browser.run(action, first)
        await assert_handed_over(server, ids, other)
        (release,) = handed
        assert release.session != other and release.held_before == ids
        assert frozenset(release.release.tasks) == ids and release.held_after == frozenset()
        await assert_exactly_once(server, campaign, 2)
    return release


@in_every_engine
async def test_a_closed_tab_hands_its_tasks_to_another_worker_at_once(
    embedding: Embedding, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = await hand_over(embedding, monkeypatch, lambda page: page.page.close())
    assert release.release.final


# Other ways a visitor leaves: the host page navigates away, or removes the embed frame (a
# single-page site changing views). Either unloads the broker's document: pagehide.
LEAVING: dict[str, Callable[[Visit], Any]] = {
    "navigates-away": lambda page: page.page.goto("about:blank"),
    "removes-the-frame": lambda page: page.page.evaluate("() => document.querySelector('iframe').remove()"),
}


@in_every_engine
@pytest.mark.parametrize("how", LEAVING)
async def test_a_page_that_goes_away_hands_its_tasks_to_another_worker_at_once(
    embedding: Embedding, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    release = await hand_over(embedding, monkeypatch, LEAVING[how])
    assert release.release.final


async def test_a_hidden_page_hands_its_tasks_to_another_worker_at_once(
    embedding: Embedding, monkeypatch: pytest.MonkeyPatch
) -> None:
    await hand_over(embedding, monkeypatch, lambda page: page.set_visibility("hidden"))


async def test_pause_hands_the_tasks_to_another_worker_at_once(
    embedding: Embedding, monkeypatch: pytest.MonkeyPatch
) -> None:
    await hand_over(embedding, monkeypatch, lambda page: page.click("pause"))


async def test_stop_hands_the_tasks_back_with_a_final_release(
    embedding: Embedding, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = await hand_over(embedding, monkeypatch, lambda page: page.click("stop"))
    assert release.release == p.Release(release.release.tasks, final=True)


async def test_throttling_down_hands_back_all_but_the_task_computing_in_the_worker_that_stays(
    embedding: Embedding, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, browser = embedding.server, embedding.browser
    handed = record_releases(server, monkeypatch)
    datasets = 9  # what "high" on four cores holds: three workers, each computing one and holding one, and three more
    campaign = await embedding.campaign(busy_kernel(2000), datasets, task_timeout=TASK_TIMEOUT)
    async with (
        embedding.visit(campaign, throttle="high") as shrinking,
        embedding.visit(campaign, throttle="high") as staying,
    ):
        await browser.run(pretend_cores, shrinking, 4)
        await browser.run(pretend_cores, staying, 4)
        await browser.run(shrinking.click, "contribute")
        await poll(lambda: any(len(ids) == datasets for ids in held(server).values()))
        await browser.run(wait_computing, shrinking, 3)
        (shrinker,) = [sid for sid, ids in held(server).items() if ids]
        other = await waiting(embedding, staying)
        await browser.run(shrinking.set_throttle, "low")  # one worker at a quarter of the time
        await poll(lambda: bool(handed), HAND_OVER)
        (release,) = handed
        assert release.session == shrinker and release.release.final
        (kept,) = release.held_after  # the task computing in the one worker that stays
        assert release.held_before - release.held_after == frozenset(release.release.tasks)
        assert len(release.release.tasks) >= datasets - 3  # every prefetched one, and those of stopped workers
        await assert_handed_over(server, frozenset(release.release.tasks), other)
        # The kept task is answered on the old connection (had it been dropped, the page's address would
        # be charged with it: assert_exactly_once checks it was not); then the page reconnects, smaller.
        await poll(lambda: shrinker not in held(server))
        with trio.fail_after(10):
            while kept not in {row["dataset_id"] for row in await server.results(campaign, include_empty=True)}:
                await trio.sleep(0.05)
        await assert_exactly_once(server, campaign, datasets)
