"""The admin pages and the first operator's offer, through real HTTP against a real server.

The offer: on a fresh database (no admin yet) a signed-in user may become the operator, once, with a
CSRF-protected form; after that nobody sees it and a second claim is a 404. The pages: campaigns
awaiting review (approve, reject with a reason the owner then reads on the campaign's page), users,
flagged workers, quotas and usage.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from distribute.models import Verdicts
from tests.conftest import LiveServer, StartServer

from .conftest import Api, People, Visitor


@pytest.fixture
async def reviewing(start_server: StartServer, tmp_path: Path) -> LiveServer:
    return await start_server(campaign_review="required", signup_min_seconds=0.0, mail_outbox=str(tmp_path / "outbox"))


@pytest.fixture
async def api_of(reviewing: LiveServer) -> AsyncIterator[Any]:
    """`await api_of(visitor)`: the JSON API with a fresh token of that visitor's account."""
    clients: list[httpx.AsyncClient] = []

    async def make(visitor: Visitor) -> Api:
        storage = reviewing.platform.storage
        user = await storage.user_by_email(visitor.email)
        assert user is not None
        token = await storage.create_token(user.id, "tests")
        clients.append(httpx.AsyncClient(base_url=reviewing.url, headers={"Authorization": f"Bearer {token}"}))
        return Api(clients[-1])

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def crowd(reviewing: LiveServer, people_on: Any) -> People:
    people: People = people_on(reviewing)
    return people


async def is_admin(server: LiveServer, email: str) -> bool:
    user = await server.platform.storage.user_by_email(email)
    return user is not None and user.admin


async def operator(server: LiveServer, people: People) -> Visitor:
    visitor = await people.sign_up("operator@example.org")
    response = await visitor.post("/operator", page="/campaigns")
    assert response.status_code == 303 and response.headers["location"] == "/admin"
    return visitor


async def test_the_first_account_is_offered_the_operators_role(reviewing: LiveServer, crowd: People) -> None:
    first = await crowd.sign_up("first@example.org")
    page = (await first.get("/campaigns")).text
    assert 'id="operator-offer"' in page and 'id="claim-operator"' in page


async def test_taking_the_offer_makes_an_admin_who_sees_the_admin_pages(reviewing: LiveServer, crowd: People) -> None:
    visitor = await operator(reviewing, crowd)
    assert await is_admin(reviewing, "operator@example.org")
    page = await visitor.get("/admin")
    assert page.status_code == 200 and 'id="awaiting-review"' in page.text
    assert 'id="nav-admin"' in page.text and 'id="operator-offer"' not in page.text


async def test_the_offer_is_gone_once_an_admin_exists(reviewing: LiveServer, crowd: People) -> None:
    await operator(reviewing, crowd)
    late = await crowd.sign_up("late@example.org")
    assert 'id="operator-offer"' not in (await late.get("/campaigns")).text
    assert (await late.post("/operator", page="/campaigns")).status_code == 404
    assert not await is_admin(reviewing, "late@example.org")


async def test_the_offer_needs_the_forms_csrf_token(reviewing: LiveServer, crowd: People) -> None:
    visitor = await crowd.sign_up("first@example.org")
    response = await visitor.client.post("/operator", data={"csrf": "forged"})
    assert response.status_code == 403
    assert not await is_admin(reviewing, "first@example.org")


async def test_signed_out_visitors_cannot_take_the_offer(reviewing: LiveServer, crowd: People) -> None:
    visitor = await crowd.anonymous()
    response = await visitor.post("/operator", page="/signin")
    assert response.status_code in (302, 401)
    assert not any(u.admin for u in await reviewing.platform.storage.list_users())


async def pending_campaign(server: LiveServer) -> int:
    campaign_id = await server.create_campaign(name="Needs a look")
    campaign = await server.campaign(campaign_id)
    assert campaign["review"]["state"] == "pending"
    return campaign_id


async def test_an_admin_approves_a_campaign_awaiting_review(reviewing: LiveServer, crowd: People) -> None:
    campaign_id = await pending_campaign(reviewing)
    admin = await operator(reviewing, crowd)
    page = (await admin.get("/admin")).text
    assert f'data-campaign-id="{campaign_id}"' in page and "Needs a look" in page
    response = await admin.post(f"/admin/campaigns/{campaign_id}/approve", page="/admin")
    assert response.status_code == 303
    assert (await reviewing.campaign(campaign_id))["review"] == {"state": "approved", "reason": ""}
    assert f'data-campaign-id="{campaign_id}"' not in (await admin.get("/admin")).text


async def test_a_rejection_reason_reaches_the_owners_campaign_page(
    reviewing: LiveServer, crowd: People, api_of: Any
) -> None:
    owner = await crowd.sign_up("owner@example.org")
    campaign_id = await (await api_of(owner)).create()
    admin = await operator(reviewing, crowd)
    response = await admin.post(f"/admin/campaigns/{campaign_id}/reject", {"reason": "Mines <coins>"}, page="/admin")
    assert response.status_code == 303
    page = (await owner.get(f"/campaigns/{campaign_id}")).text
    assert 'data-review="rejected"' in page and "Mines &lt;coins&gt;" in page


async def test_a_rejection_without_a_reason_changes_nothing(reviewing: LiveServer, crowd: People) -> None:
    campaign_id = await pending_campaign(reviewing)
    admin = await operator(reviewing, crowd)
    response = await admin.post(f"/admin/campaigns/{campaign_id}/reject", {"reason": " "}, page="/admin")
    assert response.status_code == 400
    assert (await reviewing.campaign(campaign_id))["review"]["state"] == "pending"


async def test_a_pending_campaigns_owner_is_told_on_its_page(reviewing: LiveServer, crowd: People, api_of: Any) -> None:
    owner = await crowd.sign_up("owner@example.org")
    campaign_id = await (await api_of(owner)).create()
    page = (await owner.get(f"/campaigns/{campaign_id}")).text
    assert 'data-review="pending"' in page


async def test_the_users_page_lists_every_account_with_its_role(reviewing: LiveServer, crowd: People) -> None:
    await crowd.sign_up("someone@example.org")
    admin = await operator(reviewing, crowd)
    page = (await admin.get("/admin/users")).text
    rows = dict(re.findall(r"<td>([^<\s]+@example\.org)[^<]*</td>.*?<td>(admin|user)</td>", page, re.S))
    assert rows["someone@example.org"] == "user" and rows["operator@example.org"] == "admin"


async def test_the_flagged_workers_page_lists_flagged_workers(reviewing: LiveServer, crowd: People) -> None:
    await reviewing.platform.storage.apply_verdicts(Verdicts(liars=("liar-key",), agreed=("honest-key",)))
    admin = await operator(reviewing, crowd)
    page = (await admin.get("/admin/workers")).text
    assert "liar-key" in page and "honest-key" not in page


async def test_the_quotas_page_shows_each_accounts_usage(reviewing: LiveServer, crowd: People) -> None:
    await pending_campaign(reviewing)
    admin = await operator(reviewing, crowd)
    page = (await admin.get("/admin/quotas")).text
    owner_row = re.search(r"<td>owner0@example\.org</td><td class=\"num\">(\d+)</td>", page)
    assert owner_row is not None and owner_row[1] == "1"
