"""Campaign review, with real protocol clients: under campaign_review="required" a plain user's new
campaign reaches only workers that name it until an admin approves it; a rejected one reaches nobody;
an admin's campaign, or any campaign with review off, is approved at once."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio

from tests.conftest import SEED_GENERATOR, SEED_KERNEL, SEED_STATIC, LiveServer, StartServer
from tests.support.protocol_client import work

REQUIRED = {"campaign_review": "required"}


@pytest.fixture
async def server(start_server: StartServer) -> LiveServer:
    return await start_server(**REQUIRED)


async def admin_client(server: LiveServer, email: str = "admin@example.org") -> httpx.AsyncClient:
    storage = server.platform.storage
    admin = await storage.create_user(email, admin=True)
    token = await storage.create_token(admin.id, "tests")
    return httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


async def running(server: LiveServer, client: httpx.AsyncClient | None = None) -> dict[str, Any]:
    """A new seed campaign of `client` (the plain owner's by default), once it is running, as its owner sees it."""
    client = client or server.client
    files = {
        "kernel": ("kernel.js", SEED_KERNEL.encode()),
        "generator": ("generator.js", SEED_GENERATOR.encode()),
        "static_dataset": ("static.json", SEED_STATIC.encode()),
    }
    response = await client.post("/api/campaigns", files=files)
    assert response.status_code == 201, response.text
    with trio.fail_after(30):
        while (campaign := (await client.get(f"/api/campaigns/{response.json()['id']}")).json())["status"] != "running":
            await trio.sleep(0.05)
    return campaign


async def test_a_plain_users_new_campaign_awaits_review(server: LiveServer) -> None:
    campaign = await running(server)
    assert campaign["review"] == {"state": "pending", "reason": ""}


async def test_a_worker_asking_for_any_campaign_never_receives_an_unreviewed_one(server: LiveServer) -> None:
    pending = await running(server)
    async with await admin_client(server) as admin:
        approved = (await running(server, admin))["id"]
    outcome = await work(server.ws_url)  # until the server has nothing more for it
    assert outcome.bye == "no work"
    assert {c.id for c in outcome.campaigns} == {approved}
    assert (await server.campaign(pending["id"]))["datasets"]["done"] == 0


async def test_a_worker_asking_for_any_campaign_receives_it_once_approved(server: LiveServer) -> None:
    campaign_id = (await running(server))["id"]
    async with await admin_client(server) as admin:
        response = await admin.post(f"/api/admin/campaigns/{campaign_id}/approve")
    assert response.status_code == 200 and response.json()["review"]["state"] == "approved"
    outcome = await work(server.ws_url)
    assert [c.id for c in outcome.campaigns] == [campaign_id] and outcome.bye == "no work"
    assert (await server.wait_complete(campaign_id))["status"] == "complete"


async def test_a_worker_naming_a_pending_campaign_gets_it(server: LiveServer) -> None:
    campaign_id = (await running(server))["id"]
    outcome = await work(server.ws_url, campaign=campaign_id)
    assert outcome.bye == "complete" and len(outcome.done) == 100
    assert (await server.campaign(campaign_id))["review"]["state"] == "pending"


async def test_a_rejected_campaign_is_served_to_nobody_and_its_owner_reads_why(server: LiveServer) -> None:
    campaign_id = (await running(server))["id"]
    async with await admin_client(server) as admin:
        response = await admin.post(f"/api/admin/campaigns/{campaign_id}/reject", json={"reason": "mines coins"})
    assert response.status_code == 200
    named = await work(server.ws_url, campaign=campaign_id)
    anyone = await work(server.ws_url)
    assert named.done == [] and anyone.done == [] and named.bye is not None
    campaign = await server.campaign(campaign_id)  # the owner's own view
    assert campaign["review"] == {"state": "rejected", "reason": "mines coins"}
    assert campaign["datasets"]["done"] == 0


async def test_a_campaign_rejected_through_another_process_stops_being_served_here(server: LiveServer) -> None:
    campaign_id = (await running(server))["id"]
    await server.platform.storage.set_review(campaign_id, "rejected", "decided on another server process")
    dispatcher = server.platform.dispatcher
    with trio.fail_after(10):  # this process's periodic refresh reads the new review
        while not (queue := dispatcher.queue(campaign_id)) or not queue.complete:
            await trio.sleep(0.05)
    named = await work(server.ws_url, campaign=campaign_id)
    assert named.done == [] and named.bye is not None


async def test_a_rejection_needs_a_reason(server: LiveServer) -> None:
    campaign_id = (await running(server))["id"]
    async with await admin_client(server) as admin:
        response = await admin.post(f"/api/admin/campaigns/{campaign_id}/reject", json={"reason": "  "})
    assert response.status_code == 400
    assert (await server.campaign(campaign_id))["review"]["state"] == "pending"


async def test_an_admins_own_campaign_is_approved_at_once(server: LiveServer) -> None:
    async with await admin_client(server) as admin:
        campaign_id = (await running(server, admin))["id"]
        campaign = (await admin.get(f"/api/campaigns/{campaign_id}")).json()
    assert campaign["review"] == {"state": "approved", "reason": ""}
    outcome = await work(server.ws_url)
    assert [c.id for c in outcome.campaigns] == [campaign_id]


async def test_with_review_off_a_plain_users_campaign_is_approved_at_once(start_server: StartServer) -> None:
    server = await start_server(campaign_review="off")
    campaign = await running(server)
    assert campaign["review"]["state"] == "approved"
    outcome = await work(server.ws_url)
    assert [c.id for c in outcome.campaigns] == [campaign["id"]] and len(outcome.done) == 100


@pytest.mark.parametrize("action", ["approve", "reject"])
async def test_a_plain_user_cannot_review_even_their_own_campaign(server: LiveServer, action: str) -> None:
    campaign_id = (await running(server))["id"]
    response = await server.client.post(f"/api/admin/campaigns/{campaign_id}/{action}", json={"reason": "mine"})
    assert response.status_code == 404
    assert (await server.campaign(campaign_id))["review"]["state"] == "pending"


async def test_the_review_queue_lists_pending_campaigns_for_admins_only(server: LiveServer) -> None:
    campaign_id = (await running(server))["id"]
    assert (await server.client.get("/api/admin/campaigns")).status_code == 404
    async with await admin_client(server) as admin:
        listed = (await admin.get("/api/admin/campaigns")).json()["campaigns"]
    assert [c["id"] for c in listed] == [campaign_id]


async def test_the_card_of_a_pending_campaign_is_served_and_of_a_rejected_one_is_not(server: LiveServer) -> None:
    campaign_id = (await running(server))["id"]
    async with httpx.AsyncClient(base_url=server.url) as visitor:
        assert (await visitor.get(f"/embed/{campaign_id}")).status_code == 200
        async with await admin_client(server) as admin:
            await admin.post(f"/api/admin/campaigns/{campaign_id}/reject", json={"reason": "no"})
        refused = await visitor.get(f"/embed/{campaign_id}")
    assert refused.status_code == 404 and "not available" in refused.text
