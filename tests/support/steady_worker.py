"""A protocol-level worker that spends (and reports) real time per task, in one of two styles.

- pipelined (the browser harness and the headless worker): it computes one task at a time and answers
  each at once while the server tops it up, so it always holds tasks;
- batched (`batch=True`, as `protocol_client.work`): it computes a whole batch, answers it in one
  frame, and holds nothing until the next batch arrives.

Each task takes and reports `seconds_per_task` of real time, spent in `trio.sleep`.
"""

from __future__ import annotations

import math
from collections import defaultdict

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from distribute import protocol as p
from tests.support.protocol_client import MAX_MESSAGE, receive, send

Batch = tuple[int, list[int]]  # (campaign id, task ids)


async def compute_until(
    url: str,
    stop: trio.Event,
    tally: defaultdict[int, float],
    *,
    seconds_per_task: float,
    slots: int = 4,
    batch: bool = False,
) -> None:
    """Ask for any campaign and compute until `stop` is set; `tally[campaign]` sums the seconds reported.

    A task is attributed to the campaign of the last `campaign` frame before it: the server sends a
    worker tasks of one campaign until it has drained them, then the next campaign's frame.
    """
    async with open_websocket_url(url, max_message_size=MAX_MESSAGE) as ws:
        await send(ws, p.Hello(campaign=None, slots=slots, client={"kind": "test"}))
        to_compute, arrived = trio.open_memory_channel[Batch](math.inf)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read, ws, to_compute, batch)
            with trio.CancelScope() as scope:
                nursery.start_soon(_cancel_on, stop, scope)
                async for campaign, tasks in arrived:
                    await trio.sleep(seconds_per_task * len(tasks))
                    ms = seconds_per_task * 1000.0
                    await send(ws, p.Results(tuple(p.Result(task, None, ms) for task in tasks)))
                    tally[campaign] += seconds_per_task * len(tasks)
            nursery.cancel_scope.cancel()


async def _cancel_on(stop: trio.Event, scope: trio.CancelScope) -> None:
    await stop.wait()
    scope.cancel()


async def _read(ws: WebSocketConnection, to_compute: trio.MemorySendChannel[Batch], batch: bool) -> None:
    campaign = 0
    async with to_compute:
        try:
            while True:
                message = await receive(ws)
                if isinstance(message, p.CampaignInfo):
                    campaign = message.id
                elif isinstance(message, list):
                    ids = [task.id for task in message]
                    for tasks in [ids] if batch else [[i] for i in ids]:
                        to_compute.send_nowait((campaign, tasks))
                elif isinstance(message, p.Bye):
                    return
        except ConnectionClosed:
            return
