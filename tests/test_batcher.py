"""Calls waiting together share one batch (webapp/batching.py): each gets its own result, no
batch is larger than its size, and a batch that fails answers every waiting call."""

from __future__ import annotations

import gevent

from tests.gateway_support import join_all
from webapp.batching import Batcher


def test_calls_waiting_together_share_a_batch_of_at_most_its_size_and_get_their_own_results():
    batches: list[list[int]] = []

    def double(items: list[int]) -> list[int | Exception]:
        batches.append(items)
        gevent.sleep(0.01)  # a round trip: the next calls gather meanwhile
        return [item * 2 if item != 7 else ValueError("seven") for item in items]

    batcher: Batcher[int, int] = Batcher(double, size=4)
    calls = [gevent.spawn(batcher.call, item) for item in range(10)]
    join_all(calls)

    assert [len(batch) for batch in batches] == [4, 4, 2]
    assert sorted(item for batch in batches for item in batch) == list(range(10))
    results = [call.value for call in calls]
    assert [r for i, r in enumerate(results) if i != 7] == [i * 2 for i in range(10) if i != 7]
    assert isinstance(results[7], ValueError)  # returned, for the caller to raise its own
    # A lone call later waits for a batch of its own.
    assert batcher.call(21) == 42 and batches[-1] == [21]


def test_a_batch_that_raises_answers_every_waiting_call_and_the_next_ones_go_on():
    failing = [True]

    def run(items: list[str]) -> list[str | Exception]:
        if failing[0]:
            raise RuntimeError("the batch broke")
        return [item.upper() for item in items]

    batcher: Batcher[str, str] = Batcher(run, size=100)
    calls = [gevent.spawn(batcher.call, name) for name in ("a", "b", "c")]
    join_all(calls)
    assert all(isinstance(call.value, RuntimeError) for call in calls)
    failing[0] = False
    assert batcher.call("d") == "D"
