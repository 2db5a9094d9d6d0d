"""The engine's database stage: a thread of its own that runs one batch's transaction at a time,
so that the loop can acknowledge the batch before and read the next one from Redis meanwhile.

The hand-off holds one batch: the loop hands batch N+1 over only after it has taken batch N's
outcome back, and acknowledges batch N only after that (so only once N has committed). Batches
reach the database one at a time, in the order they were handed over, which keeps each user's
rows in stream order. The thread runs nothing but the jobs it is given; every figure and every
Redis acknowledgement stays with the loop.

It is a daemon thread: a cold stop leaves the job in hand as it is (its transaction is rolled
back by the server when the process is gone) instead of waiting for it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")


class Committer(Generic[T]):
    """Runs jobs on one thread, one at a time; at most one handed over and not taken back."""

    def __init__(self, name: str = "committer") -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[tuple[Future[T], Callable[[], T]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._in_hand: Future[T] | None = None

    @property
    def busy(self) -> bool:
        """Whether a job is handed over and still running."""
        return self._in_hand is not None and not self._in_hand.done()

    def submit(self, job: Callable[[], T]) -> None:
        """Hand `job` over; the previous job's result must have been taken back (`take`)."""
        if self._in_hand is not None:
            raise RuntimeError("the committer still holds a job: take its result first")
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
            self._thread.start()
        future: Future[T] = Future()
        self._in_hand = future
        self._jobs.put((future, job))

    def take(self) -> T | None:
        """Wait for the job in hand and return its result (None when there is none); an
        exception the job raised is raised here. A stop signal interrupts the wait."""
        future, self._in_hand = self._in_hand, None
        if future is None:
            return None
        try:
            return future.result()
        except BaseException:
            if not future.done():  # the wait itself was interrupted: the job is still ours
                self._in_hand = future
            raise

    def _work(self) -> None:
        while True:
            future, job = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as exc:  # handed to the loop, which decides
                future.set_exception(exc)
