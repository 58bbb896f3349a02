"""The campaign page's kernel form: a new version uploaded with its CSRF token, refused with the reason,
recompute from a checkbox, the version shown, and the results pages with each dataset's newest version."""

from __future__ import annotations

import json
from typing import Any

from tests.console.conftest import People, Visitor
from tests.support.protocol_client import work

KERNEL_2 = "({main: function (d) { return d.i * 2; }})"


async def owner_with_campaign(people: People, api_of: Any, address: str = "alice@example.org") -> tuple[Visitor, int]:
    alice = await people.sign_up(address)
    return alice, await (await api_of(alice)).create()


async def post_kernel(visitor: Visitor, campaign_id: int, kernel: str, **form: str) -> Any:
    page = f"/campaigns/{campaign_id}"
    token = await visitor.csrf(page)
    files = {"kernel_file": ("kernel2.js", kernel.encode())}
    return await visitor.client.post(f"{page}/kernel", data={"csrf": token, **form}, files=files)


async def test_the_campaign_page_shows_the_kernel_version_and_its_form(people: People, api_of: Any) -> None:
    alice, campaign_id = await owner_with_campaign(people, api_of)
    page = (await alice.get(f"/campaigns/{campaign_id}")).text
    assert 'id="kernel-version-number">1<' in page and 'id="kernel-form"' in page and 'name="recompute"' in page


async def test_the_form_makes_version_2(people: People, api_of: Any) -> None:
    alice, campaign_id = await owner_with_campaign(people, api_of)
    response = await post_kernel(alice, campaign_id, KERNEL_2)
    assert response.status_code == 303, response.text
    page = (await alice.get(response.headers["location"])).text
    assert 'id="kernel-version-number">2<' in page and "The new kernel version is live" in page


async def test_the_form_without_its_csrf_token_changes_nothing(people: People, api_of: Any) -> None:
    alice, campaign_id = await owner_with_campaign(people, api_of)
    files = {"kernel_file": ("kernel2.js", KERNEL_2.encode())}
    response = await alice.client.post(f"/campaigns/{campaign_id}/kernel", files=files)
    assert response.status_code == 403
    assert (await (await api_of(alice)).campaign(campaign_id))["kernel_version"] == 1


async def test_a_kernel_that_does_not_parse_is_refused_on_the_page_naming_the_kernel(
    people: People, api_of: Any
) -> None:
    alice, campaign_id = await owner_with_campaign(people, api_of)
    response = await post_kernel(alice, campaign_id, "({main: function (d) { return d.i; }")
    assert response.status_code == 400 and 'id="update-error"' in response.text
    assert "kernel refused: the kernel does not parse" in response.text
    assert (await (await api_of(alice)).campaign(campaign_id))["kernel_version"] == 1


async def test_another_users_campaign_is_404(people: People, api_of: Any) -> None:
    _, campaign_id = await owner_with_campaign(people, api_of)
    mallory = await people.sign_up("mallory@example.org")
    page = "/campaigns"
    token = await mallory.csrf(page)
    files = {"kernel_file": ("kernel2.js", KERNEL_2.encode())}
    response = await mallory.client.post(f"/campaigns/{campaign_id}/kernel", data={"csrf": token}, files=files)
    assert response.status_code == 404


async def test_recompute_from_the_form_shows_each_datasets_newest_result(
    people: People, api_of: Any, console_server: Any
) -> None:
    alice, campaign_id = await owner_with_campaign(people, api_of)
    api = await api_of(alice)
    await work(console_server.ws_url, lambda d: d["i"], campaign=campaign_id)
    await api.wait_for(campaign_id, lambda c: c["status"] == "complete")
    assert (await post_kernel(alice, campaign_id, KERNEL_2, recompute="on")).status_code == 303
    await work(console_server.ws_url, lambda d: d["i"] * 2, campaign=campaign_id)
    await api.wait_for(campaign_id, lambda c: c["status"] == "complete")
    table = (await alice.get(f"/campaigns/{campaign_id}/results")).text
    assert 'id="result-count">20 results' in table and table.count('class="num kernel-version">v2<') == 20
    assert "every_version=true" in table
    every = json.loads((await alice.get(f"/campaigns/{campaign_id}/download/json?every_version=true")).text)
    assert sorted(row["kernel_version"] for row in every) == [1] * 20 + [2] * 20
    result_id = table.split('data-result-id="', 1)[1].split('"', 1)[0]
    detail = (await alice.get(f"/campaigns/{campaign_id}/results/{result_id}")).text
    assert 'id="result-kernel-version">2<' in detail
