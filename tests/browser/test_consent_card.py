"""The consent card as a visitor reads it, at the snippet's default size, in Chromium and Firefox ESR.

Every test embeds the plain-HTML snippet (220 px high by default, 480 px wide at most) in a host page
on another origin, as a site owner would, and reads the card through the host page's frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distribute.embed import DEFAULT_HEIGHT
from distribute.models import DESCRIPTION_MAX_CHARS
from tests.browser.conftest import Embedding, Visit, busy_kernel, in_every_engine

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

# How much of an element the visitor can see: its box against the frame's viewport, and whether its
# own content overflows it (a scroll box).
FIT = """(selector) => {
  const node = document.querySelector(selector);
  const box = node.getBoundingClientRect();
  return {
    visible: box.width > 0 && box.height > 0 && getComputedStyle(node).visibility === "visible",
    top: box.top, bottom: box.bottom, viewport: innerHeight,
    scrollHeight: node.scrollHeight, clientHeight: node.clientHeight,
    text: node.textContent,
  };
}"""


def fit(visit: Visit, selector: str) -> dict[str, Any]:
    result: dict[str, Any] = visit.broker().evaluate(FIT, selector)
    return result


def shot(visit: Visit, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    visit.page.locator("iframe").first.screenshot(path=str(ARTIFACTS / f"card-{name}.png"))


def frame_height(visit: Visit) -> float:
    height: float = visit.page.evaluate("() => document.querySelector('iframe').getBoundingClientRect().height")
    return height


@in_every_engine
async def test_the_card_says_before_the_click_that_it_uses_spare_cpu_and_can_be_paused(
    embedding: Embedding,
) -> None:
    campaign = await embedding.campaign(busy_kernel(1), 5)
    async with embedding.visit(campaign) as visit:
        assert await embedding.browser.run(frame_height, visit) == DEFAULT_HEIGHT
        consent = await embedding.browser.run(fit, visit, "#consent")
        state = await embedding.browser.run(visit.state)
        await embedding.browser.run(shot, visit, "idle")
    assert state["state"] == "idle" and state["done"] == 0
    assert consent["visible"] and consent["top"] >= 0 and consent["bottom"] <= consent["viewport"]
    assert "spare CPU while this page is open" in consent["text"]
    assert "pause or stop it at any time" in consent["text"]


def narrowed(visit: Visit, width: int) -> dict[str, Any]:
    visit.page.evaluate("(width) => { document.querySelector('iframe').style.width = width + 'px'; }", width)
    visit.broker().wait_for_function("(width) => innerWidth === width", arg=width)
    return {"consent": fit(visit, "#consent"), "status": fit(visit, "#status"), "contribute": fit(visit, "#contribute")}


@in_every_engine
async def test_the_consent_and_status_lines_stay_inside_the_default_height_down_to_280_px_wide(
    embedding: Embedding,
) -> None:
    campaign = await embedding.campaign(busy_kernel(1), 5, name="A rather long campaign name for the card")
    async with embedding.visit(campaign) as visit:
        seen = await embedding.browser.run(narrowed, visit, 280)
        await embedding.browser.run(shot, visit, "narrow")
    for part in seen.values():
        assert part["visible"] and part["top"] >= 0 and part["bottom"] <= part["viewport"] == DEFAULT_HEIGHT, part


def open_explanation(visit: Visit) -> dict[str, Any]:
    visit.broker().locator("#what").click()
    visit.broker().locator("#explain").wait_for(state="visible")
    return {
        "panel": fit(visit, "#explain"),
        "text": fit(visit, "#explain p"),
        "back": fit(visit, "#explain .back"),
        "focused": visit.broker().evaluate("() => document.activeElement.className"),
    }


@in_every_engine
async def test_what_is_this_is_readable_whole_without_scrolling_at_the_default_height(embedding: Embedding) -> None:
    campaign = await embedding.campaign(busy_kernel(1), 5, name="A rather long campaign name for the card")
    async with embedding.visit(campaign) as visit:
        seen = await embedding.browser.run(open_explanation, visit)
        await embedding.browser.run(shot, visit, "what-is-this")
    text, panel = seen["text"], seen["panel"]
    assert "isolated" not in text["text"] and "sandbox" in text["text"]
    assert text["scrollHeight"] <= text["clientHeight"]  # no scroll box around the text
    assert panel["scrollHeight"] <= panel["clientHeight"]
    for part in (text, seen["back"]):  # the whole text, and the way back, lie inside the 220 px frame
        assert part["visible"] and part["top"] >= 0 and part["bottom"] <= part["viewport"], part
    assert seen["focused"] == "back"


def back_from_explanation(visit: Visit) -> dict[str, Any]:
    visit.broker().locator("#explain .back").click()
    return {
        "explain": fit(visit, "#explain"),
        "contribute": fit(visit, "#contribute"),
        "focused": visit.broker().evaluate("() => document.activeElement.id"),
    }


@in_every_engine
async def test_back_returns_from_the_explanation_to_the_card_and_its_link(embedding: Embedding) -> None:
    campaign = await embedding.campaign(busy_kernel(1), 5)
    async with embedding.visit(campaign) as visit:
        await embedding.browser.run(open_explanation, visit)
        seen = await embedding.browser.run(back_from_explanation, visit)
    assert not seen["explain"]["visible"] and seen["contribute"]["visible"]
    assert seen["focused"] == "what"


# The two keyboard tests run in Chromium only: Firefox 153 delivers WebDriver BiDi key presses in the
# top-level page's process, which never forwards them into a cross-origin frame (see firefox_bidi.py).
def contribute_by_keyboard(visit: Visit, key: str) -> dict[str, Any]:
    broker = visit.broker()
    broker.locator("#contribute").focus()
    visit.page.keyboard.press(key)
    broker.wait_for_function("() => Number(document.body.dataset.done) >= 1", timeout=30_000)
    return broker.evaluate(
        "() => ({id: document.activeElement.id, role: document.activeElement.getAttribute('role'),"
        " live: document.activeElement.getAttribute('aria-live'), text: document.activeElement.textContent})"
    )


async def test_contribute_by_enter_moves_focus_to_the_status_line(embedding: Embedding) -> None:
    campaign = await embedding.campaign(busy_kernel(20), 200)
    async with embedding.visit(campaign) as visit:
        focused = await embedding.browser.run(contribute_by_keyboard, visit, "Enter")
    assert focused["id"] == "status" and focused["role"] == "status" and focused["live"] == "polite"
    assert "task" in focused["text"]  # the line that tells the visitor what is happening


async def test_contribute_by_space_moves_focus_to_the_status_line(embedding: Embedding) -> None:
    campaign = await embedding.campaign(busy_kernel(20), 200)
    async with embedding.visit(campaign) as visit:
        focused = await embedding.browser.run(contribute_by_keyboard, visit, " ")
    assert focused["id"] == "status"


def read_more(visit: Visit) -> dict[str, Any]:
    broker = visit.broker()
    before = {"more": fit(visit, "#more"), "about": fit(visit, "#about")}
    broker.locator("#more").click()
    broker.locator("#full").wait_for(state="visible")
    text = broker.locator("#full .text")
    # The full text scrolls within the frame (by keyboard too: it is focusable); read it to its end.
    text.focus()
    text.evaluate("(node) => { node.scrollTop = node.scrollHeight; }")
    return before | {
        "full": fit(visit, "#full .text"),
        "back": fit(visit, "#full .back"),
        "end_in_view": text.evaluate("(node) => node.scrollTop + node.clientHeight >= node.scrollHeight - 1"),
    }


@in_every_engine
async def test_a_long_description_opens_whole_from_more(embedding: Embedding) -> None:
    description = ("A sentence about the campaign. " * DESCRIPTION_MAX_CHARS)[: DESCRIPTION_MAX_CHARS - 4] + " END"
    campaign = await embedding.campaign(busy_kernel(1), 5, description=description)
    async with embedding.visit(campaign) as visit:
        seen = await embedding.browser.run(read_more, visit)
        await embedding.browser.run(shot, visit, "more")
    assert seen["more"]["visible"] and seen["more"]["bottom"] <= seen["more"]["viewport"]
    assert seen["about"]["scrollHeight"] > seen["about"]["clientHeight"]  # clamped on the card, hence More
    assert seen["full"]["text"] == description  # the whole text, to its last word
    assert seen["end_in_view"]
    assert seen["back"]["visible"] and seen["back"]["bottom"] <= seen["back"]["viewport"]


@in_every_engine
async def test_a_short_description_needs_no_more(embedding: Embedding) -> None:
    campaign = await embedding.campaign(busy_kernel(1), 5, description="Finds primes.")
    async with embedding.visit(campaign) as visit:
        more = await embedding.browser.run(fit, visit, "#more")
        about = await embedding.browser.run(fit, visit, "#about")
    assert not more["visible"]
    assert about["visible"] and about["text"] == "Finds primes."
