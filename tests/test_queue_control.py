"""Operator controls over the queues: pause holds a user's rows back while the others are
written and resume writes them in order; purge moves entries to dead letters and replay brings
them back; "write now" makes the engines sweep below the threshold; and the state of each queue
reads back as the dashboard shows it."""

from __future__ import annotations

from engine import control, keys, streams
from engine.deadletters import replay
from engine.settings import Settings
from engine.storage import open_storage
from tests.conftest import wait_until
from tests.engine_support import (
    append,
    append_many,
    dead_letter_rows,
    open_queue,
    order_violations,
    payload,
    pending_total,
    rows,
    stats_mismatches,
)


def msg_ids(db, user: str) -> list[str]:
    return [row.msg_id for row in rows(db) if row.user_id == user]


def test_a_paused_queue_is_held_back_while_others_are_written_and_resumes_in_order(
        backend, start_engine):
    start_engine(backend)
    assert control.pause(backend.redis, "alice", "ops") is True
    assert control.pause(backend.redis, "alice", "ops") is False  # already paused
    append_many(backend.redis, {"alice": [payload(f"a{n}") for n in range(5)],
                                "bob": [payload(f"b{n}") for n in range(5)]})
    wait_until(lambda: len(msg_ids(backend.db, "bob")) == 5, 10, what="bob's rows")
    # Later sweeps write bob's later entry; alice's entries are still waiting, unread.
    append(backend.redis, "bob", [payload("b-late")])
    wait_until(lambda: "b-late" in msg_ids(backend.db, "bob"), 10, what="bob's later row")
    assert msg_ids(backend.db, "alice") == []
    assert pending_total(backend.redis, ["alice"]) == 0
    assert control.resume(backend.redis, "alice") is True
    wait_until(lambda: len(msg_ids(backend.db, "alice")) == 5, 10, what="alice's rows")
    assert msg_ids(backend.db, "alice") == [f"a{n}" for n in range(5)]
    assert order_violations(backend.db) == []
    assert control.resume(backend.redis, "alice") is False


def test_write_now_sweeps_below_the_threshold(mysql_backend, start_engine):
    engine = start_engine(mysql_backend, BATCH_SIZE_THRESHOLD=10_000, MAX_BATCH_AGE=3600,
                          SWEEP_INTERVAL=0.5)
    append(mysql_backend.redis, "alice", [payload("a1"), payload("a2")])
    # Below the threshold and younger than MAX_BATCH_AGE: nothing is written by itself.
    assert msg_ids(mysql_backend.db, "alice") == []
    assert wait_until(lambda: control.request_sweep(mysql_backend.redis) >= 1, 10,
                      what="the engine to listen for sweep requests")
    wait_until(lambda: msg_ids(mysql_backend.db, "alice") == ["a1", "a2"], 10,
               what="the rows written on request")
    assert "a sweep was asked for" in engine.log()


def test_a_purge_moves_every_entry_to_dead_letters_and_a_replay_brings_them_back(
        backend, start_engine):
    control.pause(backend.redis, "alice", "ops")
    ids = append(backend.redis, "alice", [payload(f"a{n}", value=n) for n in range(7)])
    storage = open_storage(backend.database_url)
    try:
        assert control.purge(backend.redis, storage, "alice", "ops") == 7
    finally:
        storage.close()
    assert backend.redis.xlen(keys.stream("alice")) == 0
    assert pending_total(backend.redis, ["alice"]) == 0
    letters = dead_letter_rows(backend.db)
    assert [(d.stream_id, d.msg_id, d.error) for d in letters] == [
        (entry, f"a{n}", "purged by ops") for n, entry in enumerate(ids)]
    # The queue stays as it was: paused.
    assert control.paused_among(backend.redis, ["alice"]) == {"alice"}
    control.resume(backend.redis, "alice")
    start_engine(backend)
    settings = Settings.load(REDIS_URL=backend.redis_url, DATABASE_URL=backend.database_url,
                             env_file=None)
    assert replay(settings, backend.db, backend.redis, user_id="alice") == 7
    wait_until(lambda: len(msg_ids(backend.db, "alice")) == 7, 10, what="the replayed rows")
    assert msg_ids(backend.db, "alice") == [f"a{n}" for n in range(7)]
    assert stats_mismatches(backend.db) == []


def test_a_purge_waits_for_the_engine_to_let_go_of_the_queue(mysql_backend, start_engine):
    """The engine holding the user's lease hands it back once the queue is paused; until then
    the purge waits, and gives up with QueueBusy when it waits too long."""
    redis = mysql_backend.redis
    append(redis, "alice", [payload("a1")])
    redis.set(keys.lease("alice"), "some-engine", px=60_000)  # an engine mid-write
    storage = open_storage(mysql_backend.database_url)
    try:
        try:
            control.purge(redis, storage, "alice", "ops", wait=0.5)
        except control.QueueBusy as exc:
            assert "alice" in str(exc)
        else:
            raise AssertionError("the purge took a queue another engine holds")
        assert redis.xlen(keys.stream("alice")) == 1  # nothing moved
        assert not control.paused_among(redis, ["alice"])  # back as it was
        redis.delete(keys.lease("alice"))
        assert control.purge(redis, storage, "alice", "ops", wait=0.5) == 1
    finally:
        storage.close()


def test_an_engine_hands_back_the_lease_of_a_queue_paused_under_it(mysql_backend,
                                                                   start_engine):
    redis = mysql_backend.redis
    start_engine(mysql_backend)
    append(redis, "alice", [payload("a1")])
    wait_until(lambda: msg_ids(mysql_backend.db, "alice") == ["a1"], 10, what="a1")
    control.pause(redis, "alice", "ops")
    append(redis, "alice", [payload("a2")])
    storage = open_storage(mysql_backend.database_url)
    try:
        assert control.purge(redis, storage, "alice", "ops", wait=10) == 1
    finally:
        storage.close()
    assert msg_ids(mysql_backend.db, "alice") == ["a1"]


def test_a_paused_queue_outlives_its_users_absence(mysql_backend):
    redis = mysql_backend.redis
    open_queue(redis, "alice", "web-1")
    control.pause(redis, "alice", "ops")
    streams.close_connections(redis, ["alice"], "web-1")
    assert streams.remove_queue(redis, "alice", ["web-1"]) == "paused"
    assert redis.exists(keys.stream("alice")) and redis.exists(keys.paused("alice"))
    control.resume(redis, "alice")
    assert streams.remove_queue(redis, "alice", ["web-1"]) == "removed"


def test_queue_states_read_back_what_the_dashboard_shows(mysql_backend):
    redis = mysql_backend.redis
    open_queue(redis, "alice", "web-1")
    open_queue(redis, "alice", "web-1")
    open_queue(redis, "alice", "web-gone")
    append(redis, "alice", [payload("a1"), payload("a2")])
    append(redis, "bob", [payload("b1")])
    redis.set(keys.lease("bob"), "engine-7")
    control.pause(redis, "bob", "ops")
    alice, bob = control.queue_states(redis, ["alice", "bob"], ["web-1"])
    assert (alice.length, alice.pending, alice.connections, alice.paused, alice.lease) == \
        (2, 0, 2, False, None)
    assert alice.oldest_ms is not None and alice.oldest_ms <= streams.now_ms()
    assert (bob.length, bob.connections, bob.paused, bob.lease) == (1, 0, True, "engine-7")
    assert control.by_backlog(redis, ["bob", "alice", "carol"]) == [
        ("alice", 2), ("bob", 1), ("carol", 0)]
