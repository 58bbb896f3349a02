"""The blocking client: `Client` and its `Campaign`, over httpx.Client. Requests are built and
answers checked by the sans-I/O `core`; this module only sends them, sleeps between retries and
reads the event stream line by line."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import suppress
from itertools import islice
from types import TracebackType
from typing import Any

import httpx

from . import core
from .core import Call, MapBook, Result, ResultCursor, Source
from .errors import ClientError, ConnectionFailed, MissingResults, TooManyRequests
from .progress import CampaignProgress

__all__ = ["Campaign", "Client"]


class Client:
    """A connection to a distribute server as one campaign owner (their API token).

    `server` defaults to DISTRIBUTE_SERVER (else http://127.0.0.1:8000), `token` to DISTRIBUTE_TOKEN.
    `retry_for` is how many seconds a request keeps retrying while the server is unreachable or
    restarting before it raises `ConnectionFailed`. Use it as a context manager, or call `close()`.
    """

    def __init__(
        self, server: str | None = None, token: str | None = None, *, timeout: float = 60, retry_for: float = 120
    ) -> None:
        self.server = core.default_server(server)
        self.retry_for = retry_for
        self._http = httpx.Client(
            base_url=self.server, headers=core.headers(core.default_token(token)), timeout=timeout
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connections (the campaigns stay as they are on the server)."""
        self._http.close()

    def call(self, call: Call, *, retry: bool = True) -> Any:
        """Send one request and return its decoded JSON answer; retries while the server is
        unreachable or restarting (only where sending twice is harmless, `retry`)."""
        deadline, attempt = time.monotonic() + self.retry_for, 0
        while True:
            try:
                return core.checked(self._http.send(call.request(self._http)))
            except (httpx.TransportError, ClientError) as exc:
                if not (retry and core.retryable(exc)):
                    core.reraise(exc)
                if time.monotonic() > deadline:
                    raise ConnectionFailed(f"{self.server} did not answer for {self.retry_for:g} s: {exc}") from exc
                time.sleep(core.backoff(attempt))
                attempt += 1

    def create_campaign(
        self, *, kernel: Source, generator: Source | None = None, static: Source | Any | None = None, **options: Any
    ) -> Campaign:
        """Create a campaign from its sources (text, bytes or a path each; `static` may also be any
        JSON value) and options (`name`, `description`, `priority`, `weight`, `replication`,
        `task_timeout`, `skip_check`, `open`, `comparator`, `spot_checks`), as `POST /api/campaigns`.
        `open=True` makes a campaign without generator, fed with `Campaign.add()`."""
        info = self.call(core.create_call(kernel, generator, static, options), retry=False)
        return Campaign(self, info)

    def campaign(self, campaign_id: int) -> Campaign:
        """The owner's campaign `campaign_id` (NotFound if there is none)."""
        return Campaign(self, self.call(Call("GET", f"/api/campaigns/{campaign_id}")))

    def campaigns(self) -> list[Campaign]:
        """Every campaign of the token's owner."""
        return [Campaign(self, info) for info in self.call(Call("GET", "/api/campaigns"))["campaigns"]]

    def map(
        self,
        kernel: Source,
        datasets: Iterable[Any],
        static: Source | Any | None = None,
        *,
        ordered: bool = True,
        batch_size: int = 1000,
        window: int = 10_000,
        poll: float = 0.2,
        **options: Any,
    ) -> Iterator[Result]:
        """Compute `kernel` on every dataset of `datasets` (any iterable, even an endless one) and
        yield the results: in input order (`ordered`), else as they are stored. An open campaign is
        created; datasets go up in batches of `batch_size` while fewer than `window` are waiting to
        be handed back (and after the server's Retry-After when it answers 429); the campaign is
        closed when the iterable ends, and cancelled if the caller stops early. The blocking client
        reads results by pages, polling every `poll` seconds at most when none are waiting."""
        campaign = self.create_campaign(kernel=kernel, static=static, open=True, **options)
        book, finished = MapBook(ordered), False
        inputs, waiting, retry_at = iter(datasets), list[Any](), 0.0
        cursor = ResultCursor(None)
        try:
            pause = 0.005
            while True:
                while not book.closed and time.monotonic() >= retry_at and book.outstanding() < window:
                    waiting = waiting or list(islice(inputs, min(batch_size, window - book.outstanding())))
                    if not waiting:
                        campaign.close()
                        book.closed = True
                        break
                    try:
                        book.accepted(campaign.add(waiting, wait=False))
                        waiting = []
                    except TooManyRequests as busy:
                        retry_at = time.monotonic() + (busy.retry_after or 1.0)
                got = 0
                for result in cursor.page(self.call(core.page_call(campaign.id, cursor.cursor))):
                    got += 1
                    yield from book.receive(result)
                if book.done():
                    finished = True
                    return
                if cursor.ended:  # the campaign ended with datasets that never got a result
                    held, missing = book.finish()
                    yield from held
                    finished = True
                    if missing:
                        raise MissingResults(missing)
                    return
                pause = 0.005 if got else min(poll, pause * 2)
                time.sleep(pause)
        finally:
            if not finished:
                with suppress(ClientError):
                    campaign.cancel()


class Campaign:
    """One campaign on the server; `info` is its last known JSON (`refresh()` reads it again)."""

    def __init__(self, client: Client, info: dict[str, Any]) -> None:
        self.client = client
        self.info = info
        self.id: int = int(info["id"])

    def __repr__(self) -> str:
        return f"<Campaign {self.id} {self.info.get('status')}>"

    @property
    def status(self) -> str:
        return str(self.info["status"])

    def refresh(self) -> dict[str, Any]:
        """Read the campaign's JSON again (counts, state) and return it."""
        self.info = self.client.call(Call("GET", f"/api/campaigns/{self.id}"))
        return self.info

    def _transition(self, action: str) -> dict[str, Any]:
        self.info = self.client.call(Call("POST", f"/api/campaigns/{self.id}/{action}"))
        return self.info

    def pause(self) -> dict[str, Any]:
        """Stop handing out its tasks until `resume()` (Conflict if it cannot be paused)."""
        return self._transition("pause")

    def resume(self) -> dict[str, Any]:
        """Hand out its tasks again after a pause (its own or an automatic one)."""
        return self._transition("resume")

    def cancel(self) -> dict[str, Any]:
        """Stop it for good; its results are kept."""
        return self._transition("cancel")

    def close(self) -> dict[str, Any]:
        """An open campaign: no more datasets will come; it completes once all are answered."""
        return self._transition("close")

    def add(self, datasets: Iterable[Any], *, wait: bool = True) -> dict[str, Any]:
        """Add datasets to an open campaign, as one batch: the answer `{"added", "first", "last",
        "total"}` numbers them. Under back-pressure (429) it waits the server's Retry-After and
        tries again, unless `wait` is false (then `TooManyRequests` is raised)."""
        call = core.datasets_call(self.id, list(datasets))
        while True:
            try:
                answer: dict[str, Any] = self.client.call(call, retry=False)
                return answer
            except TooManyRequests as busy:
                if not wait:
                    raise
                time.sleep(busy.retry_after or 1.0)

    def results(self, after: str | None = None, *, stream: bool = True) -> Iterator[Result]:
        """Every result as it is stored, each once, in storage order, from the start or from the
        cursor `after`; ends once the campaign is finished and every result was handed out. A
        broken connection or a restarted server is retried with back-off, resuming from the last
        result's cursor. `stream=False` polls pages instead of the server-sent events."""
        cursor = ResultCursor(after)
        read = self._events if stream else self._pages
        deadline, attempt = time.monotonic() + self.client.retry_for, 0
        while not cursor.ended:
            try:
                for result in read(cursor):
                    attempt, deadline = 0, time.monotonic() + self.client.retry_for
                    yield result
            except (httpx.TransportError, ClientError) as exc:
                if not core.retryable(exc):
                    core.reraise(exc)
                if time.monotonic() > deadline:
                    raise ConnectionFailed(f"results of campaign {self.id}: {exc}") from exc
                time.sleep(core.backoff(attempt))
                attempt += 1

    def _events(self, cursor: ResultCursor) -> Iterator[Result]:
        http = self.client._http
        response = http.send(core.events_call(self.id, cursor.cursor).request(http), stream=True)
        try:
            if response.status_code >= 400:
                response.read()
                core.checked(response)
            parser = core.SSEParser()
            for data in response.iter_bytes():
                for event in parser.chunk(data):
                    if (result := cursor.event(event)) is not None:
                        yield result
        finally:
            response.close()
        if not cursor.ended:
            time.sleep(0.05)  # the stream ended early (a restart): reconnect from the cursor

    def _pages(self, cursor: ResultCursor) -> Iterator[Result]:
        pause = 0.01
        while not cursor.ended:
            results = cursor.page(self.client.call(core.page_call(self.id, cursor.cursor), retry=False))
            yield from results
            pause = 0.01 if results else min(1.0, pause * 2)
            if not results and not cursor.ended:
                time.sleep(pause)

    def wait(self, progress: bool = True, *, interval: float = 0.5) -> dict[str, Any]:
        """Block until the campaign is finished (complete, cancelled or failed), showing a rich
        progress bar unless `progress` is false; returns its final JSON."""
        with CampaignProgress(progress) as bar:
            while True:
                info = self.refresh()
                bar.show(info)
                if core.is_finished(info):
                    return info
                time.sleep(interval)

    def download(self, format: str = "json", *, verified: bool = False, include_empty: bool = False) -> bytes:
        """The whole results download (`json`, `csv` or `msgpack`), as `distribute results` saves it."""
        params = {"format": format, "verified": str(verified).lower(), "include_empty": str(include_empty).lower()}
        response = self.client._http.get(f"/api/campaigns/{self.id}/results", params=params)
        if response.status_code >= 400:
            core.checked(response)
        return response.content
