"""The examples of docs/client.md run as written against a real server (the `map` ones, sync and
Trio), with DISTRIBUTE_SERVER and DISTRIBUTE_TOKEN set as the page says."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
import trio

from tests.client.workers import workers
from tests.conftest import LiveServer

DOC = Path(__file__).resolve().parents[2] / "docs" / "client.md"


def examples() -> list[str]:
    """The page's Python blocks that run on their own (the `map` examples, which print a sum)."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    return [block for block in blocks if "print(" in block and "map(" in block]


def square(dataset: dict[str, int]) -> int:
    return dataset["x"] * dataset["x"]


def test_the_page_has_a_sync_and_a_trio_map_example() -> None:
    found = examples()
    assert len(found) == 2
    assert "AsyncClient" in found[1] and "AsyncClient" not in found[0]


@pytest.mark.parametrize("which", [0, 1], ids=["sync", "trio"])
async def test_the_documented_map_example_prints_the_sum_of_squares(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch, which: int
) -> None:
    monkeypatch.setenv("DISTRIBUTE_SERVER", live_server.url)
    monkeypatch.setenv("DISTRIBUTE_TOKEN", live_server.token)
    source = examples()[which]

    def run() -> str:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(source, str(DOC), "exec"), {"__name__": "example"})
        return out.getvalue()

    async with workers(live_server.ws_url, compute=square):
        printed = await trio.to_thread.run_sync(run)
    assert printed.strip() == str(sum(x * x for x in range(1000)))
