"""Entries the database keeps refusing are isolated and dead-lettered, their batch-mates commit,
and a replay writes them once the cause is fixed; entries that are not Tributary messages at all
are dead-lettered at once."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from engine import keys, streams
from engine.deadletters import replay
from engine.messages import validate
from engine.schema import dead_letters
from engine.settings import Settings
from engine.storage import open_storage
from tests.conftest import service_env, wait_until
from tests.engine_support import (
    append,
    append_many,
    dead_letter_rows,
    order_violations,
    payload,
    pending_total,
    rows,
    stats_mismatches,
)

POISON_TRIGGER = {
    "mysql": "CREATE TRIGGER poison_guard BEFORE INSERT ON messages FOR EACH ROW BEGIN "
             "IF NEW.message = 'POISON' THEN "
             "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'poison refused'; END IF; END",
    "embedded": "CREATE TRIGGER poison_guard BEFORE INSERT ON messages "
                "WHEN NEW.message = 'POISON' BEGIN SELECT RAISE(ABORT, 'poison refused'); END",
}


def drop_trigger(db: sa.engine.Engine) -> None:
    with db.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER IF EXISTS poison_guard")


@pytest.fixture
def poison_trigger(backend):
    """A trigger refusing every message whose text is POISON; dropped after the test."""
    with backend.db.begin() as conn:
        conn.exec_driver_sql(POISON_TRIGGER[backend.name])
    yield
    drop_trigger(backend.db)


def test_a_poison_row_is_dead_lettered_while_its_batch_mates_commit(
        backend, poison_trigger, start_engine, processes):
    engine = start_engine(backend, MAX_DELIVERIES=3, MAX_BATCH_AGE=0.3)
    ids = append_many(backend.redis, {
        "alice": [payload("a1"), payload("a2"), payload("poison", "POISON", value=9.0),
                  payload("a3"), payload("a4")],
        "bob": [payload("b1"), payload("b2")]})
    poison_entry = ids["alice"][2]
    poison_data = backend.redis.xrange(keys.stream("alice"), poison_entry, poison_entry)[0][1]["d"]

    wait_until(lambda: dead_letter_rows(backend.db), 15, what="the dead letter")
    wait_until(lambda: len(rows(backend.db)) == 6, 10, what="the six good rows")

    [letter] = dead_letter_rows(backend.db)
    assert (letter.user_id, letter.stream_id, letter.msg_id, letter.attempts) == \
        ("alice", poison_entry, "poison", 3)
    assert letter.payload == poison_data and json.loads(letter.payload)["message"] == "POISON"
    assert "poison refused" in letter.error
    # alice's later entries waited for the poison one: her rows are still in stream order.
    assert [r.msg_id for r in rows(backend.db) if r.user_id == "alice"] == \
        ["a1", "a2", "a3", "a4"]
    assert order_violations(backend.db) == []
    assert stats_mismatches(backend.db) == []
    # The poison entry left the stream, and nothing is pending or counted any more.
    wait_until(lambda: backend.redis.xlen(keys.stream("alice")) == 0, 5,
               what="alice's stream to empty")
    assert pending_total(backend.redis, ["alice", "bob"]) == 0
    assert not backend.redis.exists(keys.failures("alice"))
    log = engine.log()
    assert "(attempt 1 of 3)" in log and "(attempt 2 of 3)" in log
    assert "moved to dead_letters after 3 attempt(s)" in log

    # Fix the cause, replay: the row lands, once.
    drop_trigger(backend.db)
    replay = processes.start("replay", ["-m", "engine", "replay-dead-letters"],
                             service_env(backend))
    assert replay.popen.wait(30) == 0, replay.log()
    assert "replayed 1 dead letter(s)" in replay.log()
    wait_until(lambda: len(rows(backend.db)) == 7, 10, what="the replayed row")
    assert sorted(r.msg_id for r in rows(backend.db) if r.user_id == "alice") == \
        ["a1", "a2", "a3", "a4", "poison"]
    assert stats_mismatches(backend.db) == []
    with backend.db.connect() as conn:
        assert conn.execute(sa.select(dead_letters.c.replayed_at)).scalar_one() is not None

    # A second replay finds nothing left to replay.
    again = processes.start("replay", ["-m", "engine", "replay-dead-letters"],
                            service_env(backend))
    assert again.popen.wait(30) == 0
    assert "replayed 0 dead letter(s)" in again.log()


def test_an_entry_that_is_not_a_tributary_message_is_dead_lettered_at_once(
        backend, start_engine):
    append(backend.redis, "alice", [payload("a1")])
    foreign = backend.redis.xadd(keys.stream("alice"), {"foo": "bar", "n": "1"})
    garbled = backend.redis.xadd(keys.stream("alice"), {"d": "{not json"})
    append(backend.redis, "alice", [payload("a2")])
    engine = start_engine(backend, MAX_DELIVERIES=5, MAX_BATCH_AGE=0.2)

    wait_until(lambda: len(dead_letter_rows(backend.db)) == 2, 10, what="two dead letters")
    wait_until(lambda: len(rows(backend.db)) == 2, 10, what="the two good rows")

    letters = {d.stream_id: d for d in dead_letter_rows(backend.db)}
    assert json.loads(letters[foreign].payload) == {"foo": "bar", "n": "1"}
    assert letters[garbled].payload == "{not json"
    for letter in letters.values():
        assert letter.attempts == 1 and letter.msg_id is None
        assert "not a Tributary message" in letter.error
    assert [r.msg_id for r in rows(backend.db)] == ["a1", "a2"]
    wait_until(lambda: backend.redis.xlen(keys.stream("alice")) == 0, 5,
               what="alice's stream to empty")
    assert engine.alive()


def test_a_foreign_stream_without_a_consumer_group_does_not_stop_the_others(
        backend, start_engine):
    # Someone XADDs to a key shaped like a user stream: no group, not registered.
    stray = backend.redis.xadd(keys.stream("stranger"), {"hello": "world"})
    append(backend.redis, "alice", [payload("a1")])
    engine = start_engine(backend, MAX_BATCH_AGE=0.2)

    wait_until(lambda: len(rows(backend.db)) == 1, 10, what="alice's row")
    wait_until(lambda: dead_letter_rows(backend.db), 10, what="the stray entry's dead letter")
    [letter] = dead_letter_rows(backend.db)
    assert (letter.user_id, letter.stream_id) == ("stranger", stray)
    assert "unavailable" not in engine.log()


def test_replay_can_be_limited_to_one_user_or_to_some_ids_and_skips_foreign_entries(backend):
    storage = open_storage(backend.database_url)
    try:
        for user, stream_id, msg_id in [("alice", "1-1", "a1"), ("alice", "1-2", "a2"),
                                        ("bob", "1-3", "b1")]:
            data = validate(payload(msg_id), user, 4096).data.decode()
            storage.dead_letter(user, stream_id, msg_id, data, "refused", 5)
        storage.dead_letter("carol", "1-4", None, '{"foo":"bar"}', "not a Tributary message", 1)
    finally:
        storage.close()
    ids = {d.msg_id: d.id for d in dead_letter_rows(backend.db)}
    settings = Settings.load(environ={}, env_file=None)

    assert replay(settings, backend.db, backend.redis, ids=[ids["a2"]]) == 1
    assert replay(settings, backend.db, backend.redis, user_id="alice") == 1  # a1 only now
    assert replay(settings, backend.db, backend.redis) == 1  # b1; carol's is not a message

    def replayed(user: str) -> list[str]:
        return [json.loads(fields["d"])["msg_id"]
                for _, fields in backend.redis.xrange(keys.stream(user))]

    assert replayed("alice") == ["a2", "a1"] and replayed("bob") == ["b1"]
    assert not backend.redis.exists(keys.stream("carol"))
    assert set(streams.registered_users(backend.redis)) == {"alice", "bob"}
    pending_replay = [d.user_id for d in dead_letter_rows(backend.db) if d.replayed_at is None]
    assert pending_replay == ["carol"]
