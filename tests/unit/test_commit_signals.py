"""The wake-ups a group commit gives the result streams of its campaigns (`work.commits.CommitSignals`)."""

from __future__ import annotations

import trio
import trio.testing

from distribute.work.commits import CommitSignals


async def test_a_commit_of_the_campaign_wakes_its_reader() -> None:
    signals = CommitSignals()
    event = signals.next_commit(7)
    woke: list[bool] = []

    async def reader() -> None:
        woke.append(await signals.wait(7, event, 60))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        signals.landed({7})
    assert woke == [True]


async def test_a_commit_during_the_read_is_not_missed() -> None:
    signals = CommitSignals()
    event = signals.next_commit(7)  # taken before the read
    signals.landed({7})  # lands while the read runs
    with trio.fail_after(5):
        assert await signals.wait(7, event, 60)


async def test_a_commit_of_another_campaign_does_not_wake_the_reader() -> None:
    signals = CommitSignals()
    event = signals.next_commit(7)
    signals.landed({8})
    assert not await signals.wait(7, event, 0)


async def test_a_reader_that_gives_up_leaves_no_event_behind() -> None:
    signals = CommitSignals()
    assert not await signals.wait(7, signals.next_commit(7), 0)
    assert not signals.followed


async def test_a_waiting_reader_makes_the_commits_followed_until_a_commit_wakes_nobody() -> None:
    signals = CommitSignals()
    signals.next_commit(7)
    assert signals.followed
    signals.landed({7})
    assert signals.followed  # the reader it woke takes its next event only after it
    signals.landed({7})
    assert not signals.followed


async def test_a_reader_cancelled_while_waiting_leaves_no_event_behind() -> None:
    signals = CommitSignals()
    event = signals.next_commit(7)
    with trio.move_on_after(0):
        await signals.wait(7, event, 60)
    assert not signals.followed
