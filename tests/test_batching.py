"""When the engine writes: a backlog at or over BATCH_SIZE_THRESHOLD is drained at the next
sweep; a smaller one waits until its oldest entry is MAX_BATCH_AGE old, and no longer."""

from __future__ import annotations

import pytest

from tests.conftest import wait_until
from tests.engine_support import (
    EngineEvents,
    append,
    append_many,
    commit_delays,
    payload,
    row_count,
)

#: These contract tests run on Redis Cluster too (see conftest.pytest_generate_tests).
CLUSTER_CONTRACT = True

SWEEP = 0.2
#: Scheduling slack on top of one sweep interval (process wake-up, the write itself).
SLACK = 0.4


@pytest.fixture
def events(backend):
    watcher = EngineEvents(backend.redis, "tributary-test-batching")
    yield watcher
    watcher.close()


def test_below_the_threshold_nothing_is_written_before_max_batch_age(backend, start_engine):
    age = 1.5
    start_engine(backend, BATCH_SIZE_THRESHOLD=1000, MAX_BATCH_AGE=age, SWEEP_INTERVAL=SWEEP)
    append_many(backend.redis, {"alice": [payload() for _ in range(5)],
                                "bob": [payload() for _ in range(3)]})

    wait_until(lambda: row_count(backend.db) == 8, age + 10, what="the 8 rows")

    delays = commit_delays(backend.db)
    assert min(delays.values()) >= age, delays
    assert max(delays.values()) <= age + SWEEP + SLACK, delays


def test_a_single_message_of_a_single_user_is_not_stranded_below_the_threshold(
        backend, start_engine):
    age = 1.0
    start_engine(backend, BATCH_SIZE_THRESHOLD=1000, MAX_BATCH_AGE=age, SWEEP_INTERVAL=SWEEP)
    append(backend.redis, "alice", [payload("only-one")])

    wait_until(lambda: row_count(backend.db) == 1, age + 10, what="the one row")

    delay = commit_delays(backend.db)["only-one"]
    assert age <= delay <= age + SWEEP + SLACK


def test_reaching_the_threshold_starts_a_drain_at_the_next_sweep(backend, start_engine,
                                                                  events):
    start_engine(backend, BATCH_SIZE_THRESHOLD=50, MAX_BATCH_AGE=60, SWEEP_INTERVAL=SWEEP,
                 SOCKETIO_CHANNEL="tributary-test-batching")
    users = [f"user{n}" for n in range(7)]
    append_many(backend.redis, {user: [payload() for _ in range(7)] for user in users})

    # 49 entries: the engine sees them sweep after sweep and leaves them alone.
    def sweeps_seeing_49() -> bool:
        return sum(1 for s in events.sweeps() if s["backlog"] == 49) >= 5

    wait_until(sweeps_seeing_49, 10, what="five sweeps seeing a backlog of 49")
    assert row_count(backend.db) == 0

    append(backend.redis, "user0", [payload("the-50th")])
    wait_until(lambda: row_count(backend.db) == 50, 10, what="the drain of all 50")

    assert commit_delays(backend.db)["the-50th"] <= SWEEP + SLACK


def test_a_backlog_over_the_threshold_is_drained_completely(backend, start_engine):
    start_engine(backend, BATCH_SIZE_THRESHOLD=100, MAX_BATCH_AGE=60, SWEEP_INTERVAL=SWEEP,
                 BATCH_MAX=64)
    append_many(backend.redis, {f"user{n}": [payload() for _ in range(45)] for n in range(5)})
    wait_until(lambda: row_count(backend.db) == 225, 10, what="all 225 rows")
    # Written in batches of at most BATCH_MAX rows, all of them at once: none left behind
    # to wait for MAX_BATCH_AGE once the backlog fell under the threshold.
    assert max(commit_delays(backend.db).values()) <= SWEEP + 2 * SLACK
