"""Recovery: entries left pending by dead or stopped engines are claimed (XAUTOCLAIM, both reply
shapes), entries deleted while pending do not get stuck, dead consumers are removed once they
hold nothing, and engines sharing the streams keep every user's order."""

from __future__ import annotations

import re
import signal

import pytest

from engine import keys, recovery, streams
from tests.conftest import wait_until
from tests.engine_support import (
    append,
    append_many,
    consumers,
    dead_letter_rows,
    order_violations,
    payload,
    pending_total,
    row_count,
    rows,
    stats_mismatches,
    written_ids,
)

#: These contract tests run on Redis Cluster too (see conftest.pytest_generate_tests).
CLUSTER_CONTRACT = True


def engine_name(process) -> str:
    return wait_until(lambda: re.search(r"engine (\S+) started", process.log()), 10,
                      what="the engine's name").group(1)


def read_as(client, consumer: str, user: str, count: int = 1000) -> list[str]:
    """Deliver entries of the user's stream to `consumer`, as an engine reading would."""
    reply = client.xreadgroup(keys.GROUP, consumer, {keys.stream(user): ">"}, count=count)
    return [entry_id for _, items in reply for entry_id, _ in items]


# --- the protocol, on Redis 6.2 (embedded) and 7 --------------------------------------------------

def test_autoclaim_moves_idle_entries_and_counts_the_deleted_ones_on_either_reply_shape(
        backend):
    client = streams.raw_replies(backend.redis)
    ids = append(client, "alice", [payload() for _ in range(5)])
    assert read_as(client, "ghost", "alice") == ids
    client.xdel(keys.stream("alice"), ids[1], ids[3])

    claimed, deleted = streams.autoclaim(client, "alice", "me", 0, batch=2)

    assert deleted == 2
    if backend.redis_version >= (7, 0):
        # Redis 7 drops deleted entries from the PEL itself and lists them apart.
        assert claimed == 3
        assert consumers(client, "alice") == {"ghost": 0, "me": 3}
    else:
        # Redis 6.2 claims them too, as nils; read back they have no body.
        assert claimed == 5
        assert consumers(client, "alice") == {"ghost": 0, "me": 5}


def test_pending_entries_whose_body_was_deleted_are_acknowledged_not_stuck(backend,
                                                                          start_engine):
    ids = append(backend.redis, "alice", [payload(f"a{n}") for n in range(1, 6)])
    read_as(backend.redis, "ghost", "alice")  # a consumer that died with them in hand
    backend.redis.xdel(keys.stream("alice"), ids[1], ids[3])

    engine = start_engine(backend, MAX_BATCH_AGE=0.2)

    wait_until(lambda: row_count(backend.db) == 3, 10, what="the three rows left to write")
    wait_until(lambda: pending_total(backend.redis, ["alice"]) == 0, 5,
               what="nothing pending")
    assert [msg for _, msg in written_ids(backend.db)] == ["a1", "a3", "a5"]
    assert backend.redis.xlen(keys.stream("alice")) == 0
    assert dead_letter_rows(backend.db) == []  # nothing to replay: they were deleted on purpose
    assert "ghost" not in consumers(backend.redis, "alice")
    assert "claimed" in engine.log()


# --- engines that die or stop --------------------------------------------------------------------

def test_unacked_entries_are_reclaimed_after_engine_dies(backend, start_engine):
    append_many(backend.redis, {"alice": [payload() for _ in range(30)],
                                "bob": [payload(value=float(n)) for n in range(20)]})
    first = start_engine(backend, pause_after_commit=30, LEASE_TTL=1)
    wait_until(lambda: "paused after commit" in first.log(), 10, what="the first commit")
    assert row_count(backend.db) == 50
    first.kill()  # SIGKILL between the commit and the XACK
    assert pending_total(backend.redis, ["alice", "bob"]) == 50

    second = start_engine(backend, CLAIM_IDLE_MS=500, LEASE_TTL=1)

    wait_until(lambda: pending_total(backend.redis, ["alice", "bob"]) == 0, 15,
               what="the dead engine's entries to be claimed and acknowledged")
    wait_until(lambda: backend.redis.xlen(keys.stream("alice")) == 0, 5, what="empty streams")
    assert row_count(backend.db) == 50
    assert stats_mismatches(backend.db) == []
    assert re.search(rf"claimed \d+ pending entries of user (alice|bob) from "
                     rf"{re.escape(engine_name(first))}", second.log())


def test_a_stopped_engine_loses_its_entries_to_another_and_writes_no_duplicate_when_resumed(
        backend, start_engine):
    ids = append(backend.redis, "alice", [payload(f"a{n}", value=float(n))
                                          for n in range(20)])
    first = start_engine(backend, BATCH_MAX=10, pause_after_commit=4, LEASE_TTL=1)
    wait_until(lambda: "paused after commit" in first.log(), 10, what="the first commit")
    first.signal(signal.SIGSTOP)  # holding 20 entries: 10 committed, 10 not yet written
    assert row_count(backend.db) == 10
    assert consumers(backend.redis, "alice") == {engine_name(first): 20}

    second = start_engine(backend, CLAIM_IDLE_MS=1000, LEASE_TTL=1)

    wait_until(lambda: row_count(backend.db) == 20, 15, what="the second engine's writes")
    wait_until(lambda: pending_total(backend.redis, ["alice"]) == 0, 5, what="all acknowledged")
    assert f"claimed 20 pending entries of user alice from {engine_name(first)}" in second.log()

    first.signal(signal.SIGCONT)
    # Resumed, the first engine commits the 10 entries it still had in hand (and pauses after
    # that commit again): none of them is a new row.
    wait_until(lambda: first.log().count("paused after commit") == 2, 15,
               what="the first engine's late commit")
    assert first.alive()
    first.kill()
    assert sorted(written_ids(backend.db)) == sorted(("alice", f"a{n}") for n in range(20))
    assert [r.stream_id for r in rows(backend.db)] == ids
    assert stats_mismatches(backend.db) == []


# --- dead consumers ------------------------------------------------------------------------------

def test_a_dead_consumer_is_removed_and_one_holding_entries_is_kept_until_they_are_claimed(
        backend, start_engine):
    append(backend.redis, "alice", [payload() for _ in range(4)])
    read_as(backend.redis, "ghost-busy", "alice", count=2)
    backend.redis.xgroup_createconsumer(keys.stream("alice"), keys.GROUP, "ghost-idle")
    # A live engine elsewhere, holding nothing, is not touched.
    backend.redis.set(keys.engine_heartbeat("elsewhere"), "{}", ex=60)
    backend.redis.sadd(keys.ENGINES, "elsewhere")
    backend.redis.xgroup_createconsumer(keys.stream("alice"), keys.GROUP, "elsewhere")

    start_engine(backend, BATCH_SIZE_THRESHOLD=10, MAX_BATCH_AGE=60, LOG_LEVEL="DEBUG")

    wait_until(lambda: "ghost-idle" not in consumers(backend.redis, "alice"), 10,
               what="the idle dead consumer's removal")
    assert consumers(backend.redis, "alice") == {"ghost-busy": 2, "elsewhere": 0}
    assert row_count(backend.db) == 0

    append(backend.redis, "alice", [payload() for _ in range(6)])  # 10: a drain

    wait_until(lambda: row_count(backend.db) == 10, 10, what="the drain")
    wait_until(lambda: "ghost-busy" not in consumers(backend.redis, "alice"), 5,
               what="the busy dead consumer's removal once its entries were claimed")
    assert "elsewhere" in consumers(backend.redis, "alice")


class PausingRedis:
    """A Redis client whose next pipeline runs `hook` right after it executes: the moment
    between two of the engine's round trips, which no real process can be made to hit."""

    def __init__(self, client, hook) -> None:
        self._client = client
        self._hook = hook

    def pipeline(self, *args, **kwargs):
        pipe = self._client.pipeline(*args, **kwargs)
        execute, hook = pipe.execute, self._hook
        if hook is not None:
            self._hook = None

            def execute_then_hook(*a, **k):
                replies = execute(*a, **k)
                hook()
                return replies

            pipe.execute = execute_then_hook
        return pipe

    def __getattr__(self, name):
        return getattr(self._client, name)


def test_a_consumer_thought_dead_that_reads_meanwhile_keeps_its_entries(redis_db):
    client = redis_db.client
    append(client, "alice", [payload() for _ in range(3)])
    client.xgroup_createconsumer(keys.stream("alice"), keys.GROUP, "sleeper")

    # Between the look at the consumers and their removal, the sleeper wakes up and reads.
    racing = PausingRedis(client, lambda: read_as(client, "sleeper", "alice"))
    removed = recovery.remove_dead_consumers(racing, ["alice"], live=[])

    assert removed == 0
    assert consumers(client, "alice") == {"sleeper": 3}


# --- engines side by side ------------------------------------------------------------------------

@pytest.mark.slow
def test_two_engines_on_the_same_streams_keep_each_users_order_and_write_everything_once(
        backend, start_engine):
    users = [f"user{n:02d}" for n in range(50)]
    settings = {"BATCH_SIZE_THRESHOLD": 1, "MAX_BATCH_AGE": 0, "SWEEP_INTERVAL": 0.05,
                "BATCH_MAX": 200, "LEASE_TTL": 1, "CLAIM_IDLE_MS": 1000, "LOG_LEVEL": "DEBUG"}
    engines = [start_engine(backend, **settings), start_engine(backend, **settings)]
    sent = 0
    for round_ in range(20):
        append_many(backend.redis, {user: [payload(f"{user}-{round_}-{n}", value=float(n))
                                           for n in range(8)] for user in users})
        sent += 8 * len(users)
        # Keep both engines busy with a backlog that grows and shrinks.
        wait_until(lambda sent=sent: row_count(backend.db) >= sent - 1200, 20,
                   what="the engines to keep up")

    wait_until(lambda: row_count(backend.db) == sent, 30, what="every row")
    wait_until(lambda: pending_total(backend.redis, users) == 0, 10, what="all acknowledged")
    assert len(set(written_ids(backend.db))) == sent
    assert order_violations(backend.db) == []
    assert stats_mismatches(backend.db) == []
    for engine in engines:
        assert engine.alive()
        assert re.search(r"batch of \d+ entries: [1-9]\d* written", engine.log()), \
            "both engines should have written"
