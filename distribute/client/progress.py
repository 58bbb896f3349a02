"""The rich progress bar `wait(progress=True)` shows: datasets answered (done or failed) of the
datasets known so far, the campaign's state, results and kernel errors. Fed campaign JSON by either
client; it never does I/O of its own beyond drawing on the terminal."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

__all__ = ["CampaignProgress"]


class CampaignProgress:
    """`with CampaignProgress(enabled) as bar: bar.show(info)` for each campaign JSON seen."""

    def __init__(self, enabled: bool, console: Console | None = None) -> None:
        self._progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not enabled,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> CampaignProgress:
        self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._progress.stop()

    def show(self, info: Mapping[str, Any]) -> None:
        datasets = info.get("datasets", {})
        answered = int(datasets.get("done", 0)) + int(datasets.get("failed", 0))
        total = int(datasets.get("total", 0))
        state = info.get("state", {}).get("label") or info.get("status", "")
        description = f"campaign {info.get('id')}"
        detail = f"{state} · {info.get('results', 0)} results · {info.get('errors', 0)} kernel errors"
        # A campaign still generating (or open) has no final total yet: the bar then pulses.
        known_total = None if info.get("status") == "generating" else total
        if self._task is None:
            self._task = self._progress.add_task(description, total=known_total, detail=detail)
        self._progress.update(self._task, completed=answered, total=known_total, detail=detail)
