"""`make run`: the platform on SQLite with the seed's demo campaign, plus a demo host page.

Starts the server (default http://127.0.0.1:8000, database var/distribute.db), makes sure a demo
user and the divisible-by-123 campaign exist, and serves a page on another port (another origin,
as a real host site would be) that embeds the campaign's harness.
"""

from __future__ import annotations

import os
from functools import partial
from importlib import resources
from pathlib import Path

import hypercorn.config
import hypercorn.trio
import trio
from quart_trio import QuartTrio

from .app import serve
from .auth import hash_password
from .models import CampaignStatus
from .platform import Platform
from .settings import load_settings

__all__ = ["main"]

DEMO_EMAIL = "demo@example.org"
DEMO_PASSWORD = "distribute-demo"  # a local demonstration account, printed by `make run`


def demo_file(name: str) -> str:
    return resources.files("distribute").joinpath("demo_files", name).read_text()


async def ensure_demo_campaign(platform: Platform) -> tuple[int, str]:
    """The demo user's token and the id of the seed campaign (created on first run)."""
    storage = platform.storage
    user = await storage.user_by_email(DEMO_EMAIL) or await storage.create_user(
        DEMO_EMAIL, await hash_password(DEMO_PASSWORD)
    )
    token = await storage.create_token(user.id, "make run")
    campaigns = await storage.list_campaigns(user.id)
    if campaigns:
        demo = campaigns[-1]
        if demo.status == CampaignStatus.COMPLETE:
            await platform.reset_campaign(demo)  # so that the demo page has something to compute
        return demo.id, token
    campaign = await platform.create_campaign(
        user,
        name="Multiples of 123",
        description="Finds every number below 10,000 divisible by 123 (the seed project's example).",
        kernel=demo_file("kernel.js"),
        generator=demo_file("generator.js"),
        static_dataset=demo_file("static.json"),
        priority=0,
        weight=1.0,
        replication=1,
        task_timeout=platform.settings.task_timeout,
    )
    return campaign.id, token


async def serve_host_page(
    html: str, port: int, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
) -> None:
    app = QuartTrio("distribute-demo-host")

    @app.get("/")
    async def page() -> str:
        return html

    config = hypercorn.config.Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    await hypercorn.trio.serve(app, config, shutdown_trigger=partial(trio.sleep_forever), task_status=task_status)


async def run() -> None:
    Path("var").mkdir(exist_ok=True)
    defaults = {"database": f"sqlite:///{Path('var/distribute.db').resolve()}"}
    settings = load_settings(
        overrides={k: v for k, v in defaults.items() if f"DISTRIBUTE_{k.upper()}" not in os.environ}
    )
    async with trio.open_nursery() as nursery:
        running = await nursery.start(serve, settings)
        server = running.urls[0]
        campaign_id, token = await ensure_demo_campaign(running.platform)
        lines = [
            "",
            f"  distribute is running at {server}  (database {settings.database})",
            f"  console: {server}/  (sign in as {DEMO_EMAIL}, password {DEMO_PASSWORD})",
            f"  demo campaign {campaign_id}; API token of {DEMO_EMAIL}: {token}",
        ]
        try:
            from .embed import demo_host_page
        except ImportError:
            demo_host_page = None
        if demo_host_page is not None:
            host_port = int(os.environ.get("DISTRIBUTE_DEMO_HOST_PORT", settings.port + 1))
            await nursery.start(serve_host_page, demo_host_page(server, campaign_id), host_port)
            lines.append(
                f"  demo host page (another origin): http://127.0.0.1:{host_port}/  — open it and click Contribute"
            )
        lines += [
            "",
            "  try it from another terminal:",
            f"    export DISTRIBUTE_SERVER={server} DISTRIBUTE_TOKEN={token}",
            f"    .venv/bin/distribute worker --campaign {campaign_id}",
            f"    .venv/bin/distribute campaign show {campaign_id}",
            f"    .venv/bin/distribute results {campaign_id} --format csv",
            "    .venv/bin/distribute campaign create --kernel distribute/demo_files/kernel.js"
            " --generator distribute/demo_files/lazy-generator.js --static distribute/demo_files/static.json --name lazy",
            "",
            "  Ctrl+C stops the server; the database keeps the campaign for the next `make run`.",
            "",
        ]
        print("\n".join(lines), flush=True)


def main() -> None:
    try:
        trio.run(run)
    except KeyboardInterrupt:
        print("stopped")


if __name__ == "__main__":
    main()
