"""Console pages over HTTP: static pages, creating campaigns, a campaign's page, results, downloads."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

import msgpack
import pytest

from distribute.embed import embed_snippet
from tests.conftest import SEED_GENERATOR, SEED_KERNEL, SEED_STATIC, LiveServer
from tests.support.protocol_client import work

from .conftest import Api, FailingCampaign, People, Visitor, counting_generator


async def test_the_static_pages_render_for_everybody(people: People) -> None:
    visitor = await people.anonymous()
    assert "Borrow the idle CPU" in (await visitor.get("/")).text
    assert "How it works" in (await visitor.get("/how-it-works")).text
    assert "Benchmarks" in (await visitor.get("/benchmarks")).text


async def test_the_benchmarks_page_renders_the_results_file_without_raw_html(
    people: People, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distribute.console import pages

    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "throughput.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    (tmp_path / "secret.txt").write_text("not an image")
    (tmp_path / "BENCHMARKS.md").write_text(
        "# Benchmarks\n\n| workers | results/s |\n|---|---|\n| 1 | 20 000 |\n\n"
        "![throughput](plots/throughput.png)\n\n<script>alert(1)</script>\n"
    )
    monkeypatch.setattr(pages, "PROJECT_ROOT", tmp_path)
    monkeypatch.setattr(pages, "BENCHMARKS_FILE", tmp_path / "BENCHMARKS.md")
    visitor = await people.anonymous()
    page = (await visitor.get("/benchmarks")).text
    assert "<table>" in page and "<td>20 000</td>" in page
    assert '<img src="/benchmarks/files/plots/throughput.png" alt="throughput"' in page
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    image = await visitor.get("/benchmarks/files/plots/throughput.png")
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert (await visitor.get("/benchmarks/files/secret.txt")).status_code == 404
    assert (await visitor.get("/benchmarks/files/../../etc/passwd.png")).status_code == 404


async def create_by_paste(visitor: Visitor, **fields: str) -> Any:
    token = await visitor.csrf("/campaigns/new")
    data = {
        "csrf": token,
        "name": "Multiples of 123",
        "kernel_text": SEED_KERNEL,
        "generator_text": SEED_GENERATOR,
        "static_dataset_text": SEED_STATIC,
    } | fields
    return await visitor.client.post("/campaigns/new", data=data)


async def test_a_campaign_created_from_pasted_text_opens_its_page(people: People, api_of: Any) -> None:
    alice = await people.sign_up("alice@example.org")
    response = await create_by_paste(alice)
    assert response.status_code == 303
    campaign_id = int(response.headers["location"].rsplit("/", 1)[1])
    api: Api = await api_of(alice)
    campaign = await api.wait_for(campaign_id, lambda c: c["status"] == "running")
    assert campaign["name"] == "Multiples of 123" and campaign["datasets"]["total"] == 100
    page = (await alice.get(f"/campaigns/{campaign_id}")).text
    assert "Multiples of 123" in page and 'id="live"' in page


async def test_a_campaign_created_from_uploaded_files_takes_its_name_from_the_kernel_file(
    people: People, api_of: Any
) -> None:
    alice = await people.sign_up("alice@example.org")
    token = await alice.csrf("/campaigns/new")
    files = {
        "kernel_file": ("primes.js", SEED_KERNEL.encode()),
        "generator_file": ("generator.js", SEED_GENERATOR.encode()),
        "static_dataset_file": ("static.json", SEED_STATIC.encode()),
    }
    response = await alice.client.post("/campaigns/new", data={"csrf": token, "priority": "5"}, files=files)
    assert response.status_code == 303
    campaign_id = int(response.headers["location"].rsplit("/", 1)[1])
    campaign = await (await api_of(alice)).campaign(campaign_id)
    assert campaign["name"] == "primes" and campaign["priority"] == 5


async def test_invalid_fields_are_shown_next_to_the_field_and_the_pasted_text_is_kept(people: People) -> None:
    alice = await people.sign_up("alice@example.org")
    response = await create_by_paste(alice, priority="5000", generator_text="")
    assert response.status_code == 400
    assert "less than or equal to 1000" in response.text
    assert html.escape(SEED_KERNEL, quote=False) in response.text
    missing = await create_by_paste(alice, generator_text="")
    assert missing.status_code == 400 and "Upload a file or paste the text." in missing.text


async def test_a_failed_generator_is_explained_on_the_campaign_page(people: People, api_of: Any) -> None:
    alice = await people.sign_up("alice@example.org")
    response = await create_by_paste(  # past the form's trial, which would refuse it
        alice, generator_text="({main: function () { throw new Error('no data today'); }})", skip_check="1"
    )
    campaign_id = int(response.headers["location"].rsplit("/", 1)[1])
    await (await api_of(alice)).wait_for(campaign_id, lambda c: c["status"] == "failed")
    page = (await alice.get(f"/campaigns/{campaign_id}")).text
    assert "The generator failed" in page and "no data today" in page


async def test_the_campaign_page_shows_each_kernel_error_message_with_its_stack_example_dataset_and_count(
    failing_campaign: FailingCampaign,
) -> None:
    campaign = failing_campaign
    page = (await campaign.owner.get(f"/campaigns/{campaign.id}")).text
    section = page.split('id="kernel-errors"', 1)[1].split("</section>", 1)[0]
    shown = [
        html.unescape(re.sub(r"<[^>]+>", "", item)) for item in re.findall(r"<details>(.*?)</details>", section, re.S)
    ]
    assert sorted(campaign.failed) == [3, 7] and len(shown) == 2
    stacks = {row.dataset_id: row.stack for row in campaign.errors}
    for i, dataset_id in campaign.failed.items():
        (item,) = [
            text for text in shown if f"\u00d7{campaign.tries} on 1 dataset, e.g. #{i + 1} (id {dataset_id}) " in text
        ]
        assert f"RangeError: no {i} here" in item
        assert "kernel.js:3" in stacks[dataset_id] and stacks[dataset_id] in item


async def test_the_campaign_page_offers_the_html_wordpress_and_hugo_snippets(
    people: People, console_server: LiveServer
) -> None:
    alice = await people.sign_up("alice@example.org")
    campaign_id = int((await create_by_paste(alice)).headers["location"].rsplit("/", 1)[1])
    page = (await alice.get(f"/campaigns/{campaign_id}")).text
    snippets = {k: html.unescape(v) for k, v in re.findall(r'<pre id="snippet-text-(\w+)">(.*?)</pre>', page, re.S)}
    server = console_server.url
    assert snippets == {
        "html": embed_snippet(server, campaign_id),
        "wordpress": f'[distribute campaign="{campaign_id}" server="{server}"]',
        "hugo": f'{{{{< distribute campaign="{campaign_id}" server="{server}" >}}}}',
    }
    assert page.count("data-copy=") >= 3


async def finished_campaign(alice: Visitor, api_of: Any, server: LiveServer, count: int) -> tuple[Api, int]:
    api: Api = await api_of(alice)
    campaign_id = await api.create(generator=counting_generator(count))
    await api.wait_for(campaign_id, lambda c: c["status"] == "running")
    await work(
        server.ws_url, lambda d: {"square": d["i"] ** 2}, campaign=campaign_id, client={"host": "https://blog.example"}
    )
    await api.wait_for(campaign_id, lambda c: c["status"] == "complete")
    return api, campaign_id


async def test_results_are_paged_fifty_at_a_time(people: People, api_of: Any, console_server: LiveServer) -> None:
    alice = await people.sign_up("alice@example.org")
    _, campaign_id = await finished_campaign(alice, api_of, console_server, 120)
    first = (await alice.get(f"/campaigns/{campaign_id}/results")).text
    last = (await alice.get(f"/campaigns/{campaign_id}/results?page=3")).text
    assert first.count("data-result-id=") == 50 and "Page 1 of 3" in first and 'rel="next"' in first
    assert last.count("data-result-id=") == 20 and "Page 3 of 3" in last and 'rel="next"' not in last
    assert "120 results" in first and "https://blog.example" in first


async def test_one_results_page_shows_its_dataset_and_value(
    people: People, api_of: Any, console_server: LiveServer
) -> None:
    alice = await people.sign_up("alice@example.org")
    _, campaign_id = await finished_campaign(alice, api_of, console_server, 5)
    table = (await alice.get(f"/campaigns/{campaign_id}/results")).text
    result_id = re.findall(r'data-result-id="(\d+)"', table)[3]
    page = html.unescape((await alice.get(f"/campaigns/{campaign_id}/results/{result_id}")).text)
    assert '"i": 3' in page and '"square": 9' in page


@pytest.mark.parametrize("fmt", ["json", "csv", "msgpack"])
async def test_console_downloads_are_exactly_the_apis(
    fmt: str, people: People, api_of: Any, console_server: LiveServer
) -> None:
    alice = await people.sign_up("alice@example.org")
    api, campaign_id = await finished_campaign(alice, api_of, console_server, 30)
    console = await alice.get(f"/campaigns/{campaign_id}/download/{fmt}")
    from_api = await api.client.get(f"/api/campaigns/{campaign_id}/results", params={"format": fmt})
    assert console.status_code == 200 and console.content == from_api.content and len(console.content) > 100
    assert console.headers["content-disposition"] == from_api.headers["content-disposition"]


async def test_delete_restore_and_reset_from_the_campaign_page(
    people: People, api_of: Any, console_server: LiveServer
) -> None:
    alice = await people.sign_up("alice@example.org")
    api, campaign_id = await finished_campaign(alice, api_of, console_server, 10)
    page = f"/campaigns/{campaign_id}"
    assert (await alice.post(f"{page}/delete", page=page)).status_code == 303
    assert (await api.campaign(campaign_id))["deleted"] is True
    assert "This campaign is deleted" in (await alice.get(page)).text
    assert "Deleted campaigns" in (await alice.get("/campaigns")).text
    assert (await alice.post(f"{page}/restore", page=page)).status_code == 303
    assert (await api.campaign(campaign_id))["deleted"] is False
    assert (await alice.post(f"{page}/reset", page=page)).status_code == 303
    campaign = await api.campaign(campaign_id)
    assert campaign["results"] == 0 and campaign["datasets"]["pending"] == 10


async def test_the_execute_data_holds_the_first_datasets_as_stored(people: People, api_of: Any) -> None:
    alice = await people.sign_up("alice@example.org")
    api: Api = await api_of(alice)
    campaign_id = await api.create(static="shared text")
    await api.wait_for(campaign_id, lambda c: c["status"] == "running")
    data = (await alice.get(f"/campaigns/{campaign_id}/execute.json?n=3")).json()
    assert data["static"] == "shared text" and data["kernel"].startswith("({main")
    assert [d["value"] for d in data["datasets"]] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert msgpack.unpackb(base64.b64decode(data["datasets"][2]["msgpack"])) == {"i": 2}


async def test_console_pages_stay_out_of_the_api_document(people: People) -> None:
    visitor = await people.anonymous()
    paths = (await visitor.get("/api/openapi.json")).json()["paths"]
    assert "/api/campaigns" in paths
    assert not [p for p in paths if p.startswith(("/campaigns", "/account", "/signin", "/reset", "/benchmarks"))]


async def test_a_missing_result_gets_the_consoles_own_not_found_page(people: People, api_of: Any) -> None:
    alice = await people.sign_up("alice@example.org")
    campaign_id = await (await api_of(alice)).create()
    for path in (
        f"/campaigns/{campaign_id}/results/999999",
        f"/campaigns/{campaign_id}/download/xml",
        "/campaigns/999",
    ):
        response = await alice.get(path)
        assert response.status_code == 404 and "Not found" in response.text
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
