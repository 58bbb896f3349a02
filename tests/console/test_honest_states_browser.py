"""Honest states on the console, in headless Chromium: a campaign that finished with failed datasets
is a warning (never the green of complete), a paused one has a banner saying why and a Resume button,
and kernel errors are grouped by message with their counts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import trio

from tests.browser.conftest import BrowserThread
from tests.conftest import LiveServer
from tests.support.protocol_client import work

from .conftest import PASSWORD, Api, People, counting_generator
from .test_browser import Owner, on, owner_of, shot

pytestmark = pytest.mark.browser

MESSAGE = "ReferenceError: main is not defined"


def broken(dataset: Any) -> Any:
    raise RuntimeError(MESSAGE)


class RangeError(Exception):
    pass


def picky(dataset: dict[str, int]) -> int:
    if dataset["i"] in (3, 7):
        raise RangeError(f"no {dataset['i']} here")
    return dataset["i"]


@dataclass
class Campaigns:
    owner: Owner
    paused: int
    with_failures: int
    api: Api


@pytest.fixture
async def campaigns(browser: BrowserThread, console_server: LiveServer, people: People, api_of: Any) -> Any:
    """Alice's two campaigns: one paused by its early failures, one finished with 2 failed datasets."""
    alice = await people.sign_up("alice@example.org")
    api = await api_of(alice)
    paused = await api.create(generator=counting_generator(40))
    with_failures = await api.create(generator=counting_generator(20))
    for campaign_id in (paused, with_failures):
        await api.wait_for(campaign_id, lambda c: c["status"] == "running")
    with trio.fail_after(30):
        assert (await work(console_server.ws_url, broken, campaign=paused, slots=2)).bye == "paused"
        assert (await work(console_server.ws_url, picky, campaign=with_failures)).bye == "complete"
    await api.wait_for(with_failures, lambda c: c["status"] == "complete")
    await api.wait_for(paused, lambda c: c["state"]["key"] == "paused")  # stored just after its worker heard
    owner = await owner_of(browser, console_server)
    await on(browser, owner.sign_in, "alice@example.org", PASSWORD)
    yield Campaigns(owner, paused, with_failures, api)
    await on(browser, owner.close)


def badge(owner: Owner, campaign_id: int) -> dict[str, str]:
    """The list's state badge of a campaign: its text and colour, and the colour of a complete badge."""
    owner.go("/campaigns")
    result: dict[str, str] = owner.page.evaluate(
        """(id) => {
          const badge = document.querySelector(`tr[data-campaign-id="${id}"] .badge`);
          const probe = Object.assign(document.createElement("span"), {className: "badge complete"});
          document.body.append(probe);
          return {text: badge.textContent, color: getComputedStyle(badge).color,
                  green: getComputedStyle(probe).color};
        }""",
        campaign_id,
    )
    return result


async def test_the_list_shows_finished_with_failures_and_paused_in_a_warning_colour(
    browser: BrowserThread, campaigns: Campaigns
) -> None:
    finished = await on(browser, badge, campaigns.owner, campaigns.with_failures)
    paused = await on(browser, badge, campaigns.owner, campaigns.paused)
    await on(browser, shot, campaigns.owner.page, "campaigns-honest-states")
    assert finished["text"].strip().lower() == "finished with 2 failed"
    assert paused["text"].strip().lower() == "paused"
    assert finished["color"] != finished["green"] and paused["color"] != paused["green"]


def banner(owner: Owner, campaign_id: int) -> dict[str, Any]:
    owner.go(f"/campaigns/{campaign_id}")
    owner.page.wait_for_function("() => Number(document.getElementById('live').dataset.updates) >= 1")
    shown: dict[str, Any] = owner.page.evaluate(
        """() => ({visible: !document.getElementById("paused-banner").hidden,
                  text: document.getElementById("paused-banner").innerText,
                  badge: document.querySelector("[data-status]").textContent})"""
    )
    return shown


def resume(owner: Owner) -> None:
    owner.page.click("#resume")
    owner.page.wait_for_url("**?done=resumed")


async def test_a_paused_campaigns_page_says_why_and_resume_serves_it_again(
    browser: BrowserThread, console_server: LiveServer, campaigns: Campaigns
) -> None:
    owner = campaigns.owner
    before = await on(browser, banner, owner, campaigns.paused)
    await on(browser, shot, owner.page, "campaign-paused")
    assert before["visible"] and before["badge"].strip().lower() == "paused"
    assert f"20 of its first 20 tasks failed: {MESSAGE}" in before["text"]
    await on(browser, resume, owner)
    after = await on(browser, banner, owner, campaigns.paused)
    assert not after["visible"] and after["badge"].strip().lower() in ("generating", "running")
    assert (await campaigns.api.campaign(campaigns.paused))["state"]["key"] in ("generating", "running")
    outcome = await work(console_server.ws_url, lambda d: d["i"], campaign=campaigns.paused, max_tasks=1)
    assert outcome.done


def error_groups(owner: Owner, campaign_id: int) -> dict[str, Any]:
    owner.go(f"/campaigns/{campaign_id}")
    owner.page.wait_for_function("() => Number(document.getElementById('live').dataset.updates) >= 1")
    shown: dict[str, Any] = owner.page.evaluate(
        """() => ({groups: [...document.querySelectorAll("#kernel-errors .error-group")].map((g) => g.innerText),
                  text: document.getElementById("kernel-errors").innerText})"""
    )
    return shown


async def test_kernel_errors_are_grouped_by_message_with_counts_and_examples(
    browser: BrowserThread, campaigns: Campaigns
) -> None:
    paused = await on(browser, error_groups, campaigns.owner, campaigns.paused)
    picky_page = await on(browser, error_groups, campaigns.owner, campaigns.with_failures)
    await on(browser, shot, campaigns.owner.page, "campaign-error-groups")
    errors = (await campaigns.api.campaign(campaigns.paused))["errors"]
    (group,) = paused["groups"]
    assert group.startswith(MESSAGE) and f"\u00d7{errors} on " in group and "e.g. " in group
    assert len(picky_page["groups"]) == 2 and all("\u00d73 on 1 dataset, e.g. " in g for g in picky_page["groups"])
    assert "(no stack)" not in paused["text"] + picky_page["text"]
