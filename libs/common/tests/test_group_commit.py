"""GroupCommit: concurrent callers share one apply, each gets its own result."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from kiban_common.group_commit import GroupCommit


class Recorder:
    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.alone: list[int] = []
        self.fail_on = fail_on

    async def apply(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        await asyncio.sleep(0.01)
        if self.fail_on in items:
            raise ValueError("bad item in batch")
        return [i * 10 for i in items]

    async def one(self, item: int) -> int:
        self.alone.append(item)
        if item == self.fail_on:
            raise ValueError("bad item")
        return item * 10


async def test_concurrent_callers_share_batches_and_get_their_own_results() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.apply, max_batch=4)
    results = await asyncio.gather(*(group.submit(i) for i in range(10)))
    assert results == [i * 10 for i in range(10)]
    # all ten queue before the first batch starts: batches of at most 4, in arrival order
    assert recorder.batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert group.batches == 3


async def test_idle_caller_is_applied_at_once_alone() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.apply)
    assert await group.submit(7) == 70
    assert await group.submit(8) == 80
    assert recorder.batches == [[7], [8]]


async def test_failed_batch_is_retried_item_by_item_so_only_the_bad_item_fails() -> None:
    recorder = Recorder(fail_on=3)
    group = GroupCommit(recorder.apply, alone=recorder.one)
    first = asyncio.ensure_future(group.submit(0))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(group.submit(i)) for i in (2, 3, 4)]
    assert await first == 0
    outcomes = await asyncio.gather(*rest, return_exceptions=True)
    assert outcomes[0] == 20
    assert outcomes[2] == 40
    assert isinstance(outcomes[1], ValueError)
    assert recorder.alone == [2, 3, 4]


async def test_without_alone_every_caller_of_a_failed_batch_gets_the_error() -> None:
    recorder = Recorder(fail_on=3)
    group = GroupCommit(recorder.apply)
    first = asyncio.ensure_future(group.submit(0))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(group.submit(i)) for i in (2, 3)]
    await first
    for task in rest:
        with pytest.raises(ValueError, match="bad item in batch"):
            await task


async def test_cancelled_caller_does_not_cancel_the_batch() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.apply)
    first = asyncio.ensure_future(group.submit(1))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(group.submit(2))
    third = asyncio.ensure_future(group.submit(3))
    await asyncio.sleep(0)
    second.cancel()
    assert await first == 10
    assert await third == 30
    assert recorder.batches == [[1], [2, 3]]
