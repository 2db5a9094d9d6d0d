"""Exactly once through repeated crashes: engines are SIGKILLed again and again, some of them
between a commit and its XACK, while messages keep arriving; in the end every acknowledged
message is one row, nothing is left pending, and the aggregates equal a GROUP BY."""

from __future__ import annotations

import pytest

from tests.conftest import wait_until
from tests.engine_support import (
    append_many,
    backlog_total,
    order_violations,
    payload,
    pending_total,
    row_count,
    stats_mismatches,
    written_ids,
)

USERS = [f"user{n:02d}" for n in range(50)]
MESSAGES = 20_000
KILLS = 12
#: Settings that make a restarted engine take over quickly from the one it replaces.
FAST_TAKEOVER = {"BATCH_SIZE_THRESHOLD": 1, "MAX_BATCH_AGE": 0, "SWEEP_INTERVAL": 0.1,
                 "BATCH_MAX": 1000, "LEASE_TTL": 1, "CLAIM_IDLE_MS": 500}


class Producer:
    """Sends MESSAGES messages spread over USERS in slices, remembering every acked msg_id."""

    def __init__(self, client) -> None:
        self.client = client
        self.acked: list[tuple[str, str]] = []

    def send(self, count: int) -> None:
        count = min(count, MESSAGES - len(self.acked))
        start = len(self.acked)
        batches: dict[str, list[dict]] = {user: [] for user in USERS}
        for n in range(start, start + count):
            user = USERS[n % len(USERS)]
            value = float(n % 17) - 3.5 if n % 4 else None
            key = ("temperature", "humidity", None)[n % 3]
            batches[user].append(payload(f"k{n}", f"message {n}", value=value, key=key))
        ids = append_many(self.client, batches)
        for user, items in batches.items():
            assert len(ids.get(user, [])) == len(items)
            self.acked.extend((user, item["msg_id"]) for item in items)


@pytest.mark.slow
def test_repeated_sigkills_lose_nothing_and_write_nothing_twice(backend, start_engine):
    producer = Producer(backend.redis)
    slice_ = MESSAGES // (2 * KILLS + 1)
    kills_after_commit = 0
    for round_ in range(KILLS):
        producer.send(slice_)
        between_commit_and_ack = round_ % 2 == 0
        engine = start_engine(backend, **FAST_TAKEOVER,
                              pause_after_commit=30 if between_commit_and_ack else 0)
        before = row_count(backend.db)
        producer.send(slice_)  # arriving while the engine runs
        if between_commit_and_ack:
            wait_until(lambda engine=engine: "paused after commit" in engine.log(), 20,
                       what=f"round {round_}: a commit")
        else:
            wait_until(lambda before=before: row_count(backend.db) > before, 20,
                       what=f"round {round_}: some progress")
        engine.kill()
        assert engine.popen.returncode == -9
        if between_commit_and_ack:
            # Rows of this batch are committed, its entries are still pending.
            assert pending_total(backend.redis, USERS) > 0
            kills_after_commit += 1

    producer.send(MESSAGES)  # the rest
    assert len(producer.acked) == MESSAGES
    final = start_engine(backend, **FAST_TAKEOVER)

    wait_until(lambda: row_count(backend.db) >= MESSAGES, 60, what="every message written")
    wait_until(lambda: pending_total(backend.redis, USERS) == 0
               and backlog_total(backend.redis, USERS) == 0, 15, what="nothing left in Redis")

    assert kills_after_commit >= KILLS // 2
    written = written_ids(backend.db)
    assert len(written) == len(set(written)) == MESSAGES
    assert set(written) == set(producer.acked)
    assert stats_mismatches(backend.db) == []
    assert order_violations(backend.db) == []
    assert final.alive()
