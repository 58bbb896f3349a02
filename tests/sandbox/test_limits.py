"""The generator's limits hold on what reaches the server, whatever runs in the child; children are capped."""

from __future__ import annotations

import os
from typing import Any

import msgpack
import pytest
import trio

from distribute.errors import GenerationError
from distribute.sandbox.generators import batch_bytes, open_generator
from distribute.sandbox.pool import PoolLimits, SandboxPool, open_sandbox_pool

LIMITS: dict[str, Any] = {"timeout": 5.0, "heap_mib": 64, "max_dataset_bytes": 1 << 20, "max_datasets": 1_000_000}

# Owner code that replaces Array.prototype.join so that any batch joined by the harness would carry
# 20,000 datasets.
JOIN_REPLACED = """({ main: function* () {
  var join = Array.prototype.join;
  Array.prototype.join = function () { return join.call(new Array(20000).fill("0"), ","); };
  for (var i = 0; ; i++) yield i;
} })"""


async def test_a_generator_that_replaces_array_join_gets_no_more_than_n_or_max_datasets() -> None:
    got: list[object] = []
    with pytest.raises(GenerationError, match="more than 5 datasets"):
        async with open_generator(JOIN_REPLACED, **{**LIMITS, "max_datasets": 5}) as run:
            for _ in range(10):
                items, _done = await run.pull(2)
                assert len(items) <= 2
                got += [msgpack.unpackb(item) for item in items]
    assert got == [0, 1, 2, 3]


async def test_a_generator_that_replaces_array_methods_still_skips_exactly() -> None:
    array_replaced = JOIN_REPLACED.replace("function* ()", "function ()").replace(
        "for (var i = 0; ; i++) yield i;",
        "Array.prototype.push = function () { return 0; }; Math.min = function () { return 1e9; };"
        " return [0, 1, 2, 3, 4, 5, 6];",
    )
    async with open_generator(array_replaced, **LIMITS) as run:
        await run.skip(2)
        items, done = await run.pull(3)
        assert [msgpack.unpackb(item) for item in items] == [2, 3, 4]
        assert not done


async def liar(lie: str, n: int = 10, **limits: int) -> tuple[str, int]:
    """Run a stand-in child that lies; (the error, datasets accepted before it)."""
    accepted = 0
    async with open_sandbox_pool(PoolLimits(module="tests.sandbox.liar_child")) as pool:
        with pytest.raises(GenerationError) as caught, trio.fail_after(30):
            async with open_generator(lie, **{**LIMITS, **limits}, pool=pool) as run:
                if lie == "skip-lie":
                    await run.skip(10)
                for _ in range(10):
                    items, _done = await run.pull(n)
                    accepted += len(items)
        assert pool.live == 0  # the liar was killed, not kept warm
    return str(caught.value), accepted


async def test_a_child_that_lies_about_the_count_is_refused_and_killed() -> None:
    error, accepted = await liar("many", n=2, max_datasets=5)
    assert accepted == 0
    assert "20,000 datasets for 2 asked" in error


async def test_a_child_cannot_deliver_more_than_max_datasets() -> None:
    error, accepted = await liar("over-max", n=4, max_datasets=5)
    assert accepted == 4
    assert "more than 5 datasets" in error


async def test_a_child_that_lies_about_a_dataset_size_is_refused() -> None:
    error, accepted = await liar("huge-item", max_dataset_bytes=1000)
    assert accepted == 0
    assert "1,001 bytes, over the limit of 1,000 bytes" in error


async def test_a_child_cannot_deliver_more_than_the_batch_bytes() -> None:
    error, accepted = await liar("big-batch", n=100_000, max_dataset_bytes=4096)
    assert accepted == 0
    assert f"over {batch_bytes(4096):,}" in error


async def test_a_child_that_lies_about_skipping_is_refused() -> None:
    error, _ = await liar("skip-lie")
    assert "malformed skip" in error


async def test_an_oversized_frame_is_refused_from_its_header_without_reading_it() -> None:
    # The stand-in announces 1 GiB, sends 64 KiB and stays silent: reading the frame whole would wait
    # for the wall clock (and would buffer up to 1 GiB); it is refused at once instead.
    error, accepted = await liar("big-frame", timeout=600)
    assert accepted == 0
    assert "reply of 1,073,741,824 bytes, over the limit" in error
    assert "timed out" not in error


def children_of_this_process() -> set[int]:
    """The process ids of this process's children (the sandbox's, and any an earlier test left exiting)."""
    me, children = str(os.getpid()), set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == me:
                children.add(int(name))
    return children


LAZY = "({ main: function* () { for (var i = 0; i < 30; i++) yield i; } })"


@pytest.mark.parametrize("cap", [2, 4])
async def test_many_lazy_generators_share_at_most_the_cap_of_children_and_all_finish(cap: int) -> None:
    generators = cap + 3
    most = 0
    results: dict[int, list[object]] = {}

    async def one(index: int) -> None:
        async with open_generator(LAZY, **LIMITS) as run:
            got: list[object] = []
            done = False
            while not done:
                items, done = await run.pull(10)
                got += [msgpack.unpackb(item) for item in items]
                await trio.sleep(0.02)  # a lazy generator holds its child between pulls
            results[index] = got

    earlier = children_of_this_process()  # children of earlier tests' pools may still be exiting

    async def watch(pool: SandboxPool) -> None:
        nonlocal most
        while True:
            most = max(most, len(children_of_this_process() - earlier), pool.live)
            await trio.sleep(0.005)

    async with open_sandbox_pool(PoolLimits(max_children=cap)) as pool, trio.open_nursery() as watcher:
        watcher.start_soon(watch, pool)
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for index in range(generators):
                    nursery.start_soon(one, index)
        watcher.cancel_scope.cancel()
    assert results == {index: list(range(30)) for index in range(generators)}
    assert 1 <= most <= cap
