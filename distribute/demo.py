"""`make run`: the platform on SQLite with the seed's demo campaign, plus a demo host page.

Starts the server (default http://127.0.0.1:8000, database var/distribute.db), makes sure a demo
user and the divisible-by-123 campaign exist, and serves a page on another port (another origin,
as a real host site would be) that embeds the campaign's harness: the server's port + 1, or any
free port when the server's is (DISTRIBUTE_PORT=0), or DISTRIBUTE_DEMO_HOST_PORT. SIGINT (Ctrl+C)
and SIGTERM stop it cleanly, as they stop `distribute serve`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from functools import partial
from importlib import resources
from pathlib import Path

import hypercorn.config
import hypercorn.trio
import trio
from quart_trio import QuartTrio

from .app import serve
from .auth import hash_password
from .embed import demo_host_page
from .models import CampaignStatus
from .platform import Platform
from .settings import Settings, load_settings

__all__ = ["main"]

DEMO_EMAIL = "demo@example.org"
DEMO_PASSWORD = "distribute-demo"  # a local demonstration account, printed by `make run`


def demo_file(name: str) -> str:
    return resources.files("distribute").joinpath("demo_files", name).read_text()


async def ensure_demo_campaign(platform: Platform, token_file: Path | None = None) -> tuple[int, str]:
    """The demo user's token and the id of the seed campaign (created on first run).

    The token is kept in `token_file` (readable by its owner only) and used again on the next run
    while the server still accepts it, so `make run` does not mint a token every time.
    """
    storage = platform.storage
    user = await storage.user_by_email(DEMO_EMAIL) or await storage.create_user(
        DEMO_EMAIL, await hash_password(DEMO_PASSWORD), admin=True
    )
    if not user.admin:  # made before roles existed: the demo's operator reviews, and needs no review
        user = await storage.set_admin(user.id, True)
    token = await _demo_token(platform, user.id, token_file)
    campaigns = await storage.list_campaigns(user.id)
    if campaigns:
        demo = campaigns[-1]
        if demo.status == CampaignStatus.COMPLETE:
            await platform.campaigns.reset(demo.id, user)  # so that the demo page has something to compute
        return demo.id, token
    campaign = await platform.campaigns.store(
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


async def _demo_token(platform: Platform, user_id: int, token_file: Path | None) -> str:
    kept = token_file.read_text(encoding="utf-8").strip() if token_file and token_file.is_file() else ""
    owner = await platform.storage.user_for_token(kept) if kept else None
    if owner is not None and owner.id == user_id:
        return kept
    token = await platform.storage.create_token(user_id, "make run")
    if token_file:
        token_file.touch(mode=0o600)
        token_file.chmod(0o600)  # also when an older file is there
        token_file.write_text(token + "\n", encoding="utf-8")
    return token


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


def host_page_port(server_port: int) -> int:
    """The demo host page's port: DISTRIBUTE_DEMO_HOST_PORT, else the server's + 1 (0, any free one,
    when the server's port is itself chosen by the system)."""
    if "DISTRIBUTE_DEMO_HOST_PORT" in os.environ:
        return int(os.environ["DISTRIBUTE_DEMO_HOST_PORT"])
    return server_port + 1 if 0 < server_port < 65535 else 0


async def run() -> None:
    overrides: dict[str, str] = {}
    Path("var").mkdir(exist_ok=True)  # the SQLite database (unless DISTRIBUTE_DATABASE names another) and the token
    if "DISTRIBUTE_DATABASE" not in os.environ:
        overrides["database"] = f"sqlite:///{Path('var/distribute.db').resolve()}"
    settings = load_settings(overrides=overrides)
    # SIGINT and SIGTERM cancel the servers, so that the shutdown path runs (results flushed, leases
    # released) instead of a KeyboardInterrupt landing in whatever code was running.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await _start(nursery, settings)
            async for signum in signals:
                print(f"distribute demo stopping ({signal.Signals(signum).name})", file=sys.stderr, flush=True)
                nursery.cancel_scope.cancel()
                break


async def _start(nursery: trio.Nursery, settings: Settings) -> None:
    """Start the server and the demo host page in `nursery`; print where they are."""
    running = await nursery.start(serve, settings)
    server = running.urls[0]
    campaign_id, token = await ensure_demo_campaign(running.platform, Path("var/demo-token"))
    lines = [
        "",
        f"  distribute is running at {server}  (database {settings.database})",
        f"  console: {server}/  (sign in as {DEMO_EMAIL}, password {DEMO_PASSWORD})",
        f"  demo campaign {campaign_id}; API token of {DEMO_EMAIL}: {token}",
    ]
    page = demo_host_page(server, campaign_id)
    host_urls = await nursery.start(serve_host_page, page, host_page_port(settings.port))
    lines.append(f"  demo host page (another origin): {host_urls[0]}/  — open it and click Contribute")
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
    with contextlib.suppress(KeyboardInterrupt):  # a Ctrl+C before the signal receiver is installed
        trio.run(run)
    print("stopped")


if __name__ == "__main__":
    main()
