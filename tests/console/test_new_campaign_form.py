"""The new-campaign form in headless Chromium: errors at their field, uploads kept, the example button.

Each test drives the real form against a real server; the campaign it creates is checked through the
API, and the example's is computed by a headless worker running its kernel.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import pytest
import trio

from distribute.worker import run_worker
from tests.browser.conftest import BrowserThread
from tests.conftest import SEED_ANSWER, SEED_GENERATOR, SEED_STATIC, LiveServer

from .conftest import PASSWORD, People
from .test_browser import Owner, api_token, on, owner_of, shot

pytestmark = pytest.mark.browser

BROKEN_KERNEL = "({\n  main: function (d) { return d.i +; }\n})"
BROKEN_GENERATOR = "({main: function () {\n  return [1,;\n}})"
PASTED_COMPARATOR = "function (a, b) { return a === b; }"
EXAMPLE = {
    name: resources.files("distribute").joinpath("demo_files", file).read_text("utf-8")
    for name, file in (("kernel", "kernel.js"), ("generator", "generator.js"), ("static_dataset", "static.json"))
}


def upload(owner: Owner, name: str, file_name: str, text: str) -> None:
    owner.page.set_input_files(f"#{name}_file", {"name": file_name, "mimeType": "text/plain", "buffer": text.encode()})


def open_form(owner: Owner) -> None:
    owner.go("/campaigns/new")


def submit_broken_kernel(owner: Owner) -> dict[str, Any]:
    open_form(owner)
    upload(owner, "kernel", "kernel.js", BROKEN_KERNEL)
    upload(owner, "generator", "generator.js", SEED_GENERATOR)
    upload(owner, "static_dataset", "static.json", SEED_STATIC)
    owner.page.fill("#comparator_text", PASTED_COMPARATOR)
    owner.page.click("#create-campaign")
    owner.page.wait_for_selector("#kernel-error")
    shot(owner.page, "new-campaign-kernel-error")
    return owner.page.evaluate(
        """() => ({
          url: location.pathname,
          error: document.getElementById('kernel-error').textContent,
          inKernelFieldset: document.getElementById('kernel-error').closest('fieldset').id,
          texts: Object.fromEntries(['kernel', 'generator', 'static_dataset', 'comparator'].map(
            (name) => [name, document.getElementById(name + '_text').value])),
        })"""
    )


async def with_owner(browser: BrowserThread, server: LiveServer, people: People, fn: Any) -> Any:
    await people.sign_up("owner@example.org")
    owner = await owner_of(browser, server)
    try:
        await on(browser, owner.sign_in, "owner@example.org", PASSWORD)
        return await on(browser, fn, owner)
    finally:
        await on(browser, owner.close)


async def test_a_kernel_syntax_error_is_shown_at_the_kernel_with_its_line_and_column(
    browser: BrowserThread, console_server: LiveServer, people: People
) -> None:
    seen = await with_owner(browser, console_server, people, submit_broken_kernel)
    assert seen["url"] == "/campaigns/new" and seen["inKernelFieldset"] == "source-kernel"
    assert "the kernel does not parse: SyntaxError" in seen["error"]
    assert "(line 2, column " in seen["error"]


async def test_uploaded_files_fill_their_textareas_when_the_form_comes_back_and_pasted_text_stays(
    browser: BrowserThread, console_server: LiveServer, people: People
) -> None:
    seen = await with_owner(browser, console_server, people, submit_broken_kernel)
    assert seen["texts"] == {
        "kernel": BROKEN_KERNEL,
        "generator": SEED_GENERATOR,
        "static_dataset": SEED_STATIC,
        "comparator": PASTED_COMPARATOR,
    }


def submit_broken_generator(owner: Owner) -> dict[str, Any]:
    open_form(owner)
    owner.page.fill("#kernel_text", EXAMPLE["kernel"])
    owner.page.fill("#generator_text", BROKEN_GENERATOR)
    owner.page.click("#create-campaign")
    owner.page.wait_for_selector("#generator-error pre")
    box = owner.page.locator("#generator-error pre")
    return {"text": box.inner_text(), "whiteSpace": box.evaluate("(el) => getComputedStyle(el).whiteSpace")}


async def test_a_generator_syntax_error_is_shown_at_the_generator_with_its_caret_under_the_token(
    browser: BrowserThread, console_server: LiveServer, people: People
) -> None:
    seen = await with_owner(browser, console_server, people, submit_broken_generator)
    first, source, caret = seen["text"].rstrip("\n").split("\n")
    assert first.startswith("syntax error in the generator, line 2: SyntaxError") and "(line 2, column 13)" in first
    assert caret.index("^") == source.index(";")
    assert seen["whiteSpace"].startswith("pre")
    assert await console_server.platform.storage.list_campaigns() == []  # no FAILED campaign was made


def fill_from_example(owner: Owner) -> dict[str, str]:
    open_form(owner)
    upload(owner, "kernel", "other.js", "({main: function () { return 1; }})")  # a chosen file would win
    owner.page.click("#start-example")
    texts: dict[str, str] = owner.page.evaluate(
        """() => Object.fromEntries(['kernel', 'generator', 'static_dataset'].map(
             (name) => [name, document.getElementById(name + '_text').value]))"""
    )
    texts["kernel file"] = owner.page.evaluate("() => document.getElementById('kernel_file').files.length")
    return texts


async def test_the_example_button_fills_the_kernel_the_generator_and_the_static_dataset(
    browser: BrowserThread, console_server: LiveServer, people: People
) -> None:
    texts = await with_owner(browser, console_server, people, fill_from_example)
    assert texts == {**EXAMPLE, "kernel file": 0}


def create_from_example(owner: Owner) -> int:
    open_form(owner)
    owner.page.click("#start-example")
    owner.page.fill("#name", "The example")
    owner.page.click("#create-campaign")
    owner.page.wait_for_url(re.compile(r"/campaigns/\d+$"))
    assert owner.errors == []  # no script error (the console's CSP forbids inline script)
    return int(owner.page.url.rsplit("/", 1)[1])


async def test_the_example_creates_a_campaign_that_computes_every_result(
    browser: BrowserThread, console_server: LiveServer, people: People
) -> None:
    campaign_id = await with_owner(browser, console_server, people, create_from_example)
    with trio.fail_after(120):
        await run_worker(console_server.url, campaign=campaign_id)
    api = await api_token(console_server, "owner@example.org")
    campaign = await api.wait_for(campaign_id, lambda c: c["status"] == "complete")
    results = (await api.client.get(f"/api/campaigns/{campaign_id}/results")).json()
    await api.client.aclose()
    assert campaign["errors"] == 0 and campaign["kernel_errors"] == []
    assert sorted(n for row in results for n in row["result"]) == SEED_ANSWER


BROWSER_ONLY_KERNEL = "({main: function (d) { return new TextDecoder().decode(new Uint8Array([104, 105])); }})"


def create_with(owner: Owner, skip: bool) -> str:
    open_form(owner)
    owner.page.fill("#kernel_text", BROWSER_ONLY_KERNEL)
    owner.page.fill("#generator_text", SEED_GENERATOR)
    if skip:
        owner.page.check("#skip_check")
    owner.page.click("#create-campaign")
    owner.page.wait_for_load_state()
    return owner.page.url


async def test_a_kernel_needing_browser_apis_is_refused_unless_the_trial_is_skipped(
    browser: BrowserThread, console_server: LiveServer, people: People
) -> None:
    await people.sign_up("owner@example.org")
    owner = await owner_of(browser, console_server)
    try:
        await on(browser, owner.sign_in, "owner@example.org", PASSWORD)
        refused_at = await on(browser, create_with, owner, False)
        error = await on(browser, lambda: owner.page.text_content("#kernel-error"))
        created_at = await on(browser, create_with, owner, True)
    finally:
        await on(browser, owner.close)
    assert refused_at.endswith("/campaigns/new") and "TextDecoder" in (error or "")
    assert created_at.rsplit("/", 1)[1].isdigit()
