"""What the console lets an owner say on the embed card: a display name (never the e-mail address) and a
description shown whole, under one limit that the form, the API and the card share."""

from __future__ import annotations

import re
from typing import Any

import httpx

from distribute.models import DESCRIPTION_MAX_CHARS, DISPLAY_NAME_MAX_CHARS
from tests.conftest import LiveServer

from .conftest import People, Visitor

ADDRESS = "zyxwv.quux@example.org"  # a local part that no card text could contain by chance


async def set_name(visitor: Visitor, name: str) -> httpx.Response:
    return await visitor.post("/account/name", {"display_name": name}, page="/account")


async def card_of(server: LiveServer, campaign_id: int) -> str:
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.get(f"/embed/{campaign_id}")
    assert response.status_code == 200
    return response.text


async def test_a_display_name_set_on_the_account_page_is_shown_there_and_on_the_card(
    people: People, api_of: Any, console_server: LiveServer
) -> None:
    owner = await people.sign_up(ADDRESS)
    campaign_id = await (await api_of(owner)).create()
    response = await set_name(owner, "  Ada Lovelace  ")
    assert response.status_code == 303
    page = (await owner.get(response.headers["location"])).text
    assert 'value="Ada Lovelace"' in page and "Your display name is saved" in page
    card = await card_of(console_server, campaign_id)
    assert "Run by Ada Lovelace" in card
    assert "zyxwv" not in card


async def test_without_a_display_name_the_card_names_nobody_and_nothing_of_the_e_mail(
    people: People, api_of: Any, console_server: LiveServer
) -> None:
    owner = await people.sign_up(ADDRESS)
    campaign_id = await (await api_of(owner)).create()
    await set_name(owner, "Ada")
    assert (await set_name(owner, "   ")).status_code == 303  # cleared again
    card = await card_of(console_server, campaign_id)
    assert "zyxwv" not in card and "quux" not in card and "Run by" not in card
    assert f"A campaign on {console_server.url.split('://', 1)[1]}" in card


async def test_a_display_name_longer_than_the_limit_is_refused_and_kept_in_the_field(people: People) -> None:
    owner = await people.sign_up(ADDRESS)
    long = "x" * (DISPLAY_NAME_MAX_CHARS + 1)
    response = await set_name(owner, long)
    assert response.status_code == 400
    assert f"at most {DISPLAY_NAME_MAX_CHARS} characters" in response.text
    assert f'value="{long}"' in response.text and 'aria-invalid="true"' in response.text
    assert f'maxlength="{DISPLAY_NAME_MAX_CHARS}"' in response.text
    assert (await set_name(owner, "x" * DISPLAY_NAME_MAX_CHARS)).status_code == 303


async def test_a_display_name_with_control_characters_is_refused(people: People, console_server: LiveServer) -> None:
    owner = await people.sign_up(ADDRESS)
    for name in ("Ada\nLovelace", "Ada\tL", "Ada\u202eecalevol", "Ada\x00"):
        response = await set_name(owner, name)
        assert response.status_code == 400, repr(name)
        assert "control characters" in response.text
    user = await console_server.platform.storage.user_by_email(ADDRESS)
    assert user is not None and user.display_name == ""


async def test_the_description_limit_is_one_number_for_the_form_the_api_and_its_docs(
    people: People, api_of: Any, console_server: LiveServer
) -> None:
    owner = await people.sign_up(ADDRESS)
    form = (await owner.get("/campaigns/new")).text
    assert re.search(rf'<textarea id="description"[^>]*maxlength="{DESCRIPTION_MAX_CHARS}"', form)
    schema = (await owner.get("/api/openapi.json")).json()
    body = schema["paths"]["/api/campaigns"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["properties"]["description"]["maxLength"] == DESCRIPTION_MAX_CHARS
    assert "embed card, whole" in body["properties"]["description"]["description"]
    api = await api_of(owner)
    files = {"kernel": ("k.js", b"({main: (d) => d})"), "generator": ("g.js", b"({main: () => [1]})")}
    too_long = await api.client.post(
        "/api/campaigns", files=files, data={"description": "d" * (DESCRIPTION_MAX_CHARS + 1)}
    )
    assert too_long.status_code == 400


async def test_the_card_carries_a_description_of_the_full_length_whole(
    people: People, api_of: Any, console_server: LiveServer
) -> None:
    owner = await people.sign_up(ADDRESS)
    api = await api_of(owner)
    description = ("Every word counts. " * DESCRIPTION_MAX_CHARS)[: DESCRIPTION_MAX_CHARS - 3] + "END"
    files = {"kernel": ("k.js", b"({main: (d) => d})"), "generator": ("g.js", b"({main: () => [1]})")}
    response = await api.client.post("/api/campaigns", files=files, data={"description": description})
    assert response.status_code == 201, response.text
    card = await card_of(console_server, response.json()["id"])
    assert card.count(description) == 2  # on the card (clamped) and in the full-text panel that "More" opens
