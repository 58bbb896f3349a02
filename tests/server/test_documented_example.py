"""The example campaign of README.md and of the console's How it works page works exactly as written.

Each page's kernel, static dataset and generator are taken from the page as a reader copies them,
created through the API on a real server and computed by a headless worker running the kernel.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
import trio

from distribute.worker import run_worker
from tests.conftest import SEED_ANSWER, LiveServer

REPO = Path(__file__).resolve().parents[2]
HOW = REPO / "distribute" / "console" / "templates" / "console" / "how.html"


def readme_example() -> tuple[str, str, str]:
    """(kernel, static dataset, generator) as README.md's "Writing a campaign" shows them, in that order."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Writing a campaign") : text.index("## Command line")]
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, re.DOTALL)
    kernel, generator = [body for language, body in blocks if language == "js"][:2]
    (static,) = [body for language, body in blocks if language == "json"]
    return kernel, static, generator


def how_example() -> tuple[str, str, str]:
    """(kernel, static dataset, generator) as the How it works page shows them, under their headings."""
    text = HOW.read_text(encoding="utf-8")

    def under(heading: str) -> str:
        match = re.search(rf"<h2>{heading}</h2>.*?<pre><code>(.*?)</code></pre>", text, re.DOTALL)
        assert match, heading
        return html.unescape(match.group(1))

    return under("An example kernel"), under("Its static dataset"), under("And its generator")


@pytest.mark.parametrize("example", [readme_example, how_example], ids=["README.md", "how.html"])
async def test_the_documented_example_computes_every_multiple_without_kernel_errors(
    live_server: LiveServer, example: object
) -> None:
    assert callable(example)
    kernel, static, generator = example()
    assert "loadStaticDataset" in kernel and static.strip() and "main" in generator
    campaign_id = await live_server.create_campaign(kernel, generator, static)
    await live_server.wait_for(campaign_id, lambda c: c["status"] in ("running", "complete"))
    with trio.fail_after(120):
        await run_worker(live_server.url, campaign=campaign_id)
    campaign = await live_server.wait_complete(campaign_id)
    assert campaign["status"] == "complete" and campaign["errors"] == 0 and campaign["kernel_errors"] == []
    results = await live_server.results(campaign_id)
    assert sorted(n for row in results for n in row["result"]) == SEED_ANSWER
