"""The console's campaign page shows verification counts and offers verified-only downloads."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import SEED_KERNEL, SEED_STATIC
from tests.console.conftest import People
from tests.server.test_verification import TEN, run_workers
from tests.support.protocol_client import seed_kernel


async def test_the_campaign_page_shows_verification_counts_and_a_verified_download(
    people: People, api_of: Any, console_server: Any
) -> None:
    alice = await people.sign_up("alice@example.org")
    token = await alice.csrf("/campaigns/new")
    files = {
        "kernel_file": ("k.js", SEED_KERNEL.replace("var divisor;", "var divisor = 123;").encode()),
        "generator_file": ("g.js", TEN.encode()),
        "static_dataset_file": ("s.json", SEED_STATIC.encode()),  # its loadStaticDataset parses it
        "comparator_file": ("c.js", b"({compare: function (a, b) { return true; }})"),
    }
    response = await alice.client.post("/campaigns/new", data={"csrf": token, "replication": "2"}, files=files)
    assert response.status_code == 303, response.text
    campaign_id = int(response.headers["location"].rsplit("/", 1)[1])
    api = await api_of(alice)
    await run_workers(console_server, campaign_id, ("127.0.0.1", "a", seed_kernel), ("127.0.0.2", "b", seed_kernel))
    await api.wait_for(campaign_id, lambda c: c["status"] == "complete")
    page = (await alice.get(f"/campaigns/{campaign_id}")).text
    assert 'id="stat-verified">10<' in page and 'id="stat-conflict">0<' in page
    assert 'id="stat-unverified">0<' in page and 'id="stat-flagged">0<' in page
    assert f"/campaigns/{campaign_id}/download/json?verified=true" in page
    download = await alice.get(f"/campaigns/{campaign_id}/download/json?verified=true")
    rows = json.loads(download.text)
    assert len(rows) == 9 and {r["verification"] for r in rows} == {"canonical"}  # 500..599: no multiple (null)
