"""The Trio client: `AsyncClient` and its `AsyncCampaign`, over httpx.AsyncClient. The same
requests and checks as the blocking client (the sans-I/O `core`); `map` runs its uploads and its
result stream as two tasks of one nursery, so datasets go up while results come down."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable
from contextlib import aclosing, asynccontextmanager, suppress
from types import TracebackType
from typing import Any

import httpx
import trio

from . import core
from .core import Call, MapBook, Result, ResultCursor, Source
from .errors import ClientError, ConnectionFailed, MissingResults, TooManyRequests
from .progress import CampaignProgress

__all__ = ["AsyncCampaign", "AsyncClient"]


class AsyncClient:
    """`Client` for Trio: the same arguments, every method a coroutine (`results` an async
    iterator, `map` an async context manager). Use `async with AsyncClient() as client:`."""

    def __init__(
        self, server: str | None = None, token: str | None = None, *, timeout: float = 60, retry_for: float = 120
    ) -> None:
        self.server = core.default_server(server)
        self.retry_for = retry_for
        self._http = httpx.AsyncClient(
            base_url=self.server, headers=core.headers(core.default_token(token)), timeout=timeout
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def call(self, call: Call, *, retry: bool = True) -> Any:
        """Send one request and return its decoded JSON answer (see `Client.call`)."""
        deadline, attempt = trio.current_time() + self.retry_for, 0
        while True:
            try:
                return core.checked(await self._http.send(call.request(self._http)))
            except (httpx.TransportError, ClientError) as exc:
                if not (retry and core.retryable(exc)):
                    core.reraise(exc)
                if trio.current_time() > deadline:
                    raise ConnectionFailed(f"{self.server} did not answer for {self.retry_for:g} s: {exc}") from exc
                await trio.sleep(core.backoff(attempt))
                attempt += 1

    async def create_campaign(
        self, *, kernel: Source, generator: Source | None = None, static: Source | Any | None = None, **options: Any
    ) -> AsyncCampaign:
        """See `Client.create_campaign`."""
        info = await self.call(core.create_call(kernel, generator, static, options), retry=False)
        return AsyncCampaign(self, info)

    async def campaign(self, campaign_id: int) -> AsyncCampaign:
        return AsyncCampaign(self, await self.call(Call("GET", f"/api/campaigns/{campaign_id}")))

    async def campaigns(self) -> list[AsyncCampaign]:
        return [AsyncCampaign(self, info) for info in (await self.call(Call("GET", "/api/campaigns")))["campaigns"]]

    @asynccontextmanager
    async def map(
        self,
        kernel: Source,
        datasets: Iterable[Any] | AsyncIterable[Any],
        static: Source | Any | None = None,
        *,
        ordered: bool = True,
        batch_size: int = 1000,
        window: int = 10_000,
        **options: Any,
    ) -> AsyncIterator[AsyncIterator[Result]]:
        """`async with client.map(kernel, datasets) as results: async for result in results: ...`

        As `Client.map` (`datasets` may also be an async iterable); results arrive over the event
        stream. Leaving the block before the last result cancels the campaign.
        """
        campaign = await self.create_campaign(kernel=kernel, static=static, open=True, **options)
        book = MapBook(ordered)
        room = trio.Condition()
        # Bounded: a caller slower than the workers holds the stream, and so the uploads, back.
        send, receive = trio.open_memory_channel[Result](window)
        finished = False

        async def feed(into: trio.MemorySendChannel[Any]) -> None:
            async with into:
                async for dataset in _aiter(datasets):
                    await into.send(dataset)

        async def push() -> None:
            # A batch is whatever the input has ready, up to batch_size: full batches from a fast
            # iterable, and no dataset kept waiting for a batch to fill from a slow one.
            into, ready = trio.open_memory_channel[Any](batch_size)
            nursery.start_soon(feed, into)
            async with ready:
                async for first in ready:
                    batch = [first]
                    while len(batch) < batch_size:
                        try:
                            batch.append(ready.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    await upload(batch)
            await campaign.close()
            book.closed = True  # pull ends once every result came (or the campaign completes)

        async def upload(batch: list[Any]) -> None:
            async with room:
                while book.outstanding() + len(batch) > max(window, len(batch)) and book.outstanding():
                    await room.wait()
            book.accepted(await campaign.add(batch))

        async def pull() -> None:
            async with send, aclosing(campaign.results()) as results:
                async for result in results:
                    for ready in book.receive(result):
                        await send.send(ready)
                    async with room:
                        room.notify_all()
                    if book.done():
                        return
                held, missing = book.finish()
                for ready in held:
                    await send.send(ready)
                if missing:
                    raise MissingResults(missing)

        async def handed() -> AsyncGenerator[Result, None]:
            nonlocal finished
            async for result in receive:
                yield result
            finished = True

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(push)
                nursery.start_soon(pull)
                yield handed()
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise _single(group) from None
        finally:
            if not finished:
                with trio.CancelScope(shield=True), trio.move_on_after(10), suppress(ClientError):
                    await campaign.cancel()


class AsyncCampaign:
    """`Campaign` for Trio (see its methods): `info`, `id`, and coroutines for the rest."""

    def __init__(self, client: AsyncClient, info: dict[str, Any]) -> None:
        self.client = client
        self.info = info
        self.id: int = int(info["id"])

    def __repr__(self) -> str:
        return f"<AsyncCampaign {self.id} {self.info.get('status')}>"

    @property
    def status(self) -> str:
        return str(self.info["status"])

    async def refresh(self) -> dict[str, Any]:
        self.info = await self.client.call(Call("GET", f"/api/campaigns/{self.id}"))
        return self.info

    async def _transition(self, action: str) -> dict[str, Any]:
        self.info = await self.client.call(Call("POST", f"/api/campaigns/{self.id}/{action}"))
        return self.info

    async def pause(self) -> dict[str, Any]:
        return await self._transition("pause")

    async def resume(self) -> dict[str, Any]:
        return await self._transition("resume")

    async def cancel(self) -> dict[str, Any]:
        return await self._transition("cancel")

    async def close(self) -> dict[str, Any]:
        return await self._transition("close")

    async def add(self, datasets: Iterable[Any], *, wait: bool = True) -> dict[str, Any]:
        """See `Campaign.add`."""
        call = core.datasets_call(self.id, list(datasets))
        while True:
            try:
                answer: dict[str, Any] = await self.client.call(call, retry=False)
                return answer
            except TooManyRequests as busy:
                if not wait:
                    raise
                await trio.sleep(busy.retry_after or 1.0)

    async def results(self, after: str | None = None, *, stream: bool = True) -> AsyncGenerator[Result, None]:
        """See `Campaign.results`. Close it when leaving early (`async with aclosing(...)`)."""
        cursor = ResultCursor(after)
        read = self._events if stream else self._pages
        deadline, attempt = trio.current_time() + self.client.retry_for, 0
        while not cursor.ended:
            try:
                async for result in read(cursor):
                    attempt, deadline = 0, trio.current_time() + self.client.retry_for
                    yield result
            except (httpx.TransportError, ClientError) as exc:
                if not core.retryable(exc):
                    core.reraise(exc)
                if trio.current_time() > deadline:
                    raise ConnectionFailed(f"results of campaign {self.id}: {exc}") from exc
                await trio.sleep(core.backoff(attempt))
                attempt += 1

    async def _events(self, cursor: ResultCursor) -> AsyncGenerator[Result, None]:
        http = self.client._http
        response = await http.send(core.events_call(self.id, cursor.cursor).request(http), stream=True)
        try:
            if response.status_code >= 400:
                await response.aread()
                core.checked(response)
            parser = core.SSEParser()
            async for data in response.aiter_bytes():
                for event in parser.chunk(data):
                    if (result := cursor.event(event)) is not None:
                        yield result
        finally:
            await response.aclose()
        if not cursor.ended:
            await trio.sleep(0.05)  # the stream ended early (a restart): reconnect from the cursor

    async def _pages(self, cursor: ResultCursor) -> AsyncGenerator[Result, None]:
        pause = 0.01
        while not cursor.ended:
            results = cursor.page(await self.client.call(core.page_call(self.id, cursor.cursor), retry=False))
            for result in results:
                yield result
            pause = 0.01 if results else min(1.0, pause * 2)
            if not results and not cursor.ended:
                await trio.sleep(pause)

    async def wait(self, progress: bool = True, *, interval: float = 0.5) -> dict[str, Any]:
        """See `Campaign.wait`."""
        with CampaignProgress(progress) as bar:
            while True:
                info = await self.refresh()
                bar.show(info)
                if core.is_finished(info):
                    return info
                await trio.sleep(interval)

    async def download(self, format: str = "json", *, verified: bool = False, include_empty: bool = False) -> bytes:
        params = {"format": format, "verified": str(verified).lower(), "include_empty": str(include_empty).lower()}
        response = await self.client._http.get(f"/api/campaigns/{self.id}/results", params=params)
        if response.status_code >= 400:
            core.checked(response)
        return response.content


async def _aiter(items: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
            await trio.lowlevel.checkpoint_if_cancelled()


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error of a map's tasks (a ClientError, say), not wrapped in a group."""
    leaves: list[BaseException] = []

    def collect(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                collect(inner)
        else:
            leaves.append(exc)

    collect(group)
    return leaves[0] if len(leaves) == 1 else group
