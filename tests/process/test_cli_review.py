"""The `distribute` command line for operators: admins made on the server (`user create --admin`,
`user grant-admin`), campaigns approved and rejected through the API (`campaign approve|reject`),
and the review state in `campaign show`."""

from __future__ import annotations

from tests.conftest import LiveServer, StartServer
from tests.process.test_cli import distribute


async def reviewing(start_server: StartServer) -> LiveServer:
    return await start_server(campaign_review="required")


async def test_user_create_admin_makes_an_admin_with_a_working_token(start_server: StartServer) -> None:
    server = await reviewing(start_server)
    result = await distribute("user", "create", "op@example.org", "--admin", "--database", server.settings.database)
    assert result.stdout.decode().startswith("created admin op@example.org")
    user = await server.platform.storage.user_for_token(result.stdout.decode().split()[-1])
    assert user is not None and user.admin


async def test_user_create_without_admin_makes_a_plain_user(start_server: StartServer) -> None:
    server = await reviewing(start_server)
    result = await distribute("user", "create", "plain@example.org", "--database", server.settings.database)
    user = await server.platform.storage.user_for_token(result.stdout.decode().split()[-1])
    assert user is not None and not user.admin


async def test_grant_admin_makes_an_existing_user_an_admin(start_server: StartServer) -> None:
    server = await reviewing(start_server)
    await server.platform.storage.create_user("later@example.org")
    await distribute("user", "grant-admin", "later@example.org", "--database", server.settings.database)
    user = await server.platform.storage.user_by_email("later@example.org")
    assert user is not None and user.admin


async def test_grant_admin_to_an_unknown_address_fails_clearly(start_server: StartServer) -> None:
    server = await reviewing(start_server)
    result = await distribute(
        "user", "grant-admin", "nobody@example.org", "--database", server.settings.database, check=False
    )
    assert result.returncode != 0 and b"nobody@example.org" in result.stderr


async def admin_token(server: LiveServer) -> str:
    result = await distribute("user", "create", "op@example.org", "--admin", "--database", server.settings.database)
    return result.stdout.decode().split()[-1]


async def test_campaign_approve_approves_and_show_no_longer_says_pending(start_server: StartServer) -> None:
    server = await reviewing(start_server)
    campaign_id = await server.create_campaign(name="reviewed")
    owner = ("--server", server.url, "--token", server.token)
    shown = (await distribute("campaign", "show", str(campaign_id), *owner)).stdout.decode()
    assert "review    pending" in shown
    token = await admin_token(server)
    result = await distribute("campaign", "approve", str(campaign_id), "--server", server.url, "--token", token)
    assert result.stdout.decode().strip() == f"approved campaign {campaign_id}"
    assert (await server.campaign(campaign_id))["review"]["state"] == "approved"
    assert "review    " not in (await distribute("campaign", "show", str(campaign_id), *owner)).stdout.decode()


async def test_campaign_reject_gives_the_owner_the_reason_in_show(start_server: StartServer) -> None:
    server = await reviewing(start_server)
    campaign_id = await server.create_campaign(name="rejected")
    token = await admin_token(server)
    await distribute(
        "campaign", "reject", str(campaign_id), "--reason", "mines coins", "--server", server.url, "--token", token
    )
    shown = await distribute("campaign", "show", str(campaign_id), "--server", server.url, "--token", server.token)
    assert "review    rejected: mines coins" in shown.stdout.decode()


async def test_campaign_approve_with_a_plain_users_token_is_not_found(start_server: StartServer) -> None:
    server = await reviewing(start_server)
    campaign_id = await server.create_campaign(name="mine")
    result = await distribute(
        "campaign", "approve", str(campaign_id), "--server", server.url, "--token", server.token, check=False
    )
    assert result.returncode != 0 and b"404" in result.stderr
    assert (await server.campaign(campaign_id))["review"]["state"] == "pending"
