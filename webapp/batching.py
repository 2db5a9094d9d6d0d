"""Calls that arrive together share one batch of work.

In a reconnect storm thousands of connects wait at the same moment for the same kind of work (a
Redis round trip, a database query). `Batcher.call` queues its item and waits; one greenlet,
started on first use, runs the batch function over what is queued, at most `size` items at a
time, and hands each caller its own result. While a batch is out, the next calls gather for
the following one: a lone call waits for one batch, a storm for a few dozen. (The gateway's
flusher does the same for messages, answering from the flusher instead of waking a caller.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import gevent
from gevent.event import AsyncResult, Event

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """Runs `run` over the items of the calls waiting together, `size` at most at a time.

    `run` returns one result per item, in order; an exception in place of a result is that
    item's failure, and an exception `run` raises is every item's."""

    def __init__(self, run: Callable[[list[T]], Sequence[R | Exception]], size: int) -> None:
        self._run = run
        self.size = size
        self._queued: list[tuple[T, AsyncResult]] = []
        self._wake = Event()
        self._greenlet: gevent.Greenlet | None = None

    def call(self, item: T) -> R | Exception:
        """`item`'s result, or the exception that failed it (returned, not raised: the caller
        raises one of its own, as one instance raised in many greenlets would collect all
        their tracebacks)."""
        waiter: AsyncResult = AsyncResult()
        self._queued.append((item, waiter))
        if self._greenlet is None or self._greenlet.dead:
            self._greenlet = gevent.spawn(self._loop)
        self._wake.set()
        return waiter.get()  # type: ignore[no-any-return]

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while self._queued:
                batch = self._queued[:self.size]
                del self._queued[:self.size]
                items = [item for item, _ in batch]
                try:
                    results: Sequence[R | Exception] = self._run(items)
                except Exception as exc:  # every waiting call is answered, whatever happened
                    results = [exc] * len(batch)
                for (_, waiter), result in zip(batch, results, strict=True):
                    waiter.set(result)
