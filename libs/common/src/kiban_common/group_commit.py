"""Group commit: concurrent callers' writes applied in one transaction.

A transaction costs a few round trips to the database whatever it holds (BEGIN, the statements,
COMMIT), and on a small machine each round trip costs more CPU than the Python around it. When
many requests each commit a little, applying them together turns N transactions into one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Queue items from concurrent callers; `apply` runs on each batch and returns one result
    per item, in order. One batch is in flight at a time; items arriving meanwhile form the next
    (at most `max_batch`), so an idle service applies each item at once and a busy one amortizes
    the transaction over many.

    If `apply` raises and `alone` is given, each item of that batch is then applied by `alone`
    on its own (which may retry), so a single bad item fails only its caller; without `alone`
    every caller of the batch gets the exception. A caller cancelled while waiting does not
    cancel the batch: its item is applied (callers must be able to retry idempotently)."""

    def __init__(
        self,
        apply: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        *,
        alone: Callable[[T], Awaitable[R]] | None = None,
        max_batch: int = 100,
    ) -> None:
        self._apply = apply
        self._alone = alone
        self.max_batch = max_batch
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._flushing: asyncio.Task[None] | None = None
        self.batches = 0  # applied so far (for tests and metrics)

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[R] = loop.create_future()
        # Mark an outcome retrieved even when the waiter was cancelled (no "never retrieved").
        done.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._queue.append((item, done))
        if self._flushing is None or self._flushing.done() or self._flushing.get_loop() is not loop:
            self._flushing = loop.create_task(self._flush())
        return await asyncio.shield(done)

    async def _flush(self) -> None:
        while self._queue:
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            self.batches += 1
            try:
                results = await self._apply([item for item, _ in batch])
            except Exception as exc:
                if self._alone is None:
                    _settle_all(batch, exc)
                else:
                    await self._one_by_one(batch)
            else:
                for (_, done), result in zip(batch, results, strict=True):
                    if not done.done():
                        done.set_result(result)

    async def _one_by_one(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        assert self._alone is not None
        for item, done in batch:
            try:
                result = await self._alone(item)
            except Exception as exc:
                if not done.done():
                    done.set_exception(exc)
            else:
                if not done.done():
                    done.set_result(result)


def _settle_all(batch: list[tuple[T, asyncio.Future[R]]], exc: Exception) -> None:
    for _, done in batch:
        if not done.done():
            done.set_exception(exc)
