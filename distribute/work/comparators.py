"""Owners' comparators in the sandbox, for the verifier: does result a agree with result b?

A campaign without a comparator compares canonical bytes. A comparator is loaded per verification
round (`Comparators.round`; a warm sandbox child makes that cheap), so no child stays tied to a
campaign that has finished. One that does not load, hangs or crashes the sandbox is given up for
good: since one loop decides for every campaign, a comparator that hangs would otherwise cost all
of them `COMPARE_TIMEOUT` per pair.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

import msgpack
import trio

from ..errors import KernelError
from ..models import Campaign, Vote
from ..sandbox.kernels import KernelRun, open_kernel
from .verification import canonical, comparator_input, comparator_kernel

__all__ = ["COMPARE_TIMEOUT", "ComparatorRound", "Comparators", "canonical_answer"]

log = logging.getLogger(__name__)
COMPARE_TIMEOUT = 5.0  # seconds for one compare(a, b) in the sandbox

Same = Callable[[bytes | None, bytes | None], bool]


def canonical_answer(value: bytes | None) -> bytes | None:
    """A worker's msgpack answer (or a spot check's known one) in canonical bytes."""
    return None if value is None else canonical(msgpack.unpackb(value))


class Comparators:
    """The comparators given up (campaign id -> why), across rounds."""

    def __init__(self, heap_mib: int) -> None:
        self.heap_mib = heap_mib
        self.broken: dict[int, str] = {}

    @asynccontextmanager
    async def round(self) -> AsyncIterator[ComparatorRound]:
        """Comparators for one round; the sandbox children go back to the pool when it ends."""
        async with AsyncExitStack() as stack:
            yield ComparatorRound(self, stack)


class ComparatorRound:
    def __init__(self, comparators: Comparators, stack: AsyncExitStack) -> None:
        self._comparators = comparators
        self._stack = stack
        self._loaded: dict[int, KernelRun | None] = {}  # campaign id -> its comparator (None: bytes)

    async def load(self, campaign_id: int, campaign: Campaign | None) -> None:
        """Load the campaign's comparator for this round, once (None: compare bytes)."""
        if campaign_id in self._loaded:
            return
        run: KernelRun | None = None
        if campaign is not None and campaign.comparator and campaign_id not in self._comparators.broken:
            try:
                run = await self._stack.enter_async_context(
                    open_kernel(
                        comparator_kernel(campaign.comparator),
                        "",
                        heap_mib=self._comparators.heap_mib,
                        max_result_bytes=1024,
                        load_timeout=COMPARE_TIMEOUT,
                    )
                )
            except KernelError as exc:
                self._give_up(campaign_id, f"it does not load ({exc})")
                return
        self._loaded[campaign_id] = run

    def _give_up(self, campaign_id: int, why: str) -> None:
        self._comparators.broken[campaign_id] = why
        self._loaded[campaign_id] = None
        log.warning("comparator of campaign %d given up, %s: its results are compared byte for byte", campaign_id, why)

    async def agree(self, a: bytes | None, b: bytes | None, campaign_id: int) -> bool:
        """Do two canonical results agree (equal bytes, or the loaded comparator says so)?"""
        if a == b:
            return True
        comparator = self._loaded.get(campaign_id)
        if comparator is None or a is None or b is None:
            return False
        started = trio.current_time()
        try:
            value, _ = await comparator.run(comparator_input(a, b), COMPARE_TIMEOUT)
        except KernelError as exc:
            # An exception (say, on a liar's malformed result) is a cheap "no". A comparison that
            # ran out its time, or crashed the sandbox, would cost as much on every later pair.
            if trio.current_time() - started >= COMPARE_TIMEOUT / 2 or not exc.stack:
                self._give_up(campaign_id, f"a comparison failed: {exc}")
            else:
                log.info("comparator of campaign %d threw: %s", campaign_id, exc)
            return False
        return value is not None and bool(msgpack.unpackb(value))

    async def sameness(self, votes: Sequence[Vote], campaign_id: int) -> Same:
        """Agreement between every pair of distinct payloads, computed up front (the comparator is async)."""
        if self._loaded.get(campaign_id) is None:
            return lambda a, b: a == b
        payloads = list(dict.fromkeys(v.payload for v in votes))
        table: dict[tuple[bytes | None, bytes | None], bool] = {}
        for i, a in enumerate(payloads):
            for b in payloads[i + 1 :]:
                table[(a, b)] = table[(b, a)] = await self.agree(a, b, campaign_id)
        return lambda a, b: a == b or table.get((a, b), False)
