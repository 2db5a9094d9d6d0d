"""The storage contract, on MySQL/MariaDB and on SQLite: idempotent batch inserts, aggregates
that always equal a GROUP BY over the rows, and errors sorted into refused data and outages."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace

import pymysql
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from engine.errors import RowRejected, StorageUnavailable
from engine.schema import key_stats, messages, user_stats
from engine.storage import Row, Storage, open_storage
from tests.conftest import TEST_DATABASE_URL, free_port
from tests.engine_support import dead_letter_rows, row_count, rows, stats_mismatches

BASE_MS = 1_795_000_000_000


def row(user: str, n: int, *, value: float | None = None, message: str = "hello",
        received_offset_ms: int | None = None, msg_id: str | None = None,
        key: str | None = None) -> Row:
    received = BASE_MS + (n if received_offset_ms is None else received_offset_ms) * 1000
    return Row(user, f"{received}-{n}", msg_id or f"m-{n}", message, value, key,
               "2026-11-26T10:00:00.123Z", received)


@pytest.fixture(params=["mysql", "sqlite"])
def store(request: pytest.FixtureRequest) -> Iterator[tuple[Storage, sa.engine.Engine]]:
    db = request.getfixturevalue("mysql_db" if request.param == "mysql" else "sqlite_db")
    url = TEST_DATABASE_URL if request.param == "mysql" else db.url.render_as_string()
    storage = open_storage(url)
    yield storage, db
    storage.close()


def stats(db: sa.engine.Engine) -> list[tuple]:
    with db.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(user_stats).order_by(
            user_stats.c.user_id))]


def stats_without_updated_at(db: sa.engine.Engine) -> list[tuple]:
    columns = [c for c in user_stats.c if c.name != "updated_at"]
    with db.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(*columns).order_by(
            user_stats.c.user_id))]


def test_a_batch_is_inserted_with_its_aggregates(store):
    storage, db = store
    batch = [row("alice", 1, value=2.5), row("alice", 2), row("alice", 3, value=-1.0),
             row("bob", 4, value=10)]
    assert storage.write(batch) == 4
    assert [(r.user_id, r.msg_id) for r in rows(db)] == [
        ("alice", "m-1"), ("alice", "m-2"), ("alice", "m-3"), ("bob", "m-4")]
    assert stats_mismatches(db) == []
    with db.connect() as conn:
        alice = conn.execute(sa.select(user_stats).where(user_stats.c.user_id == "alice")).one()
    assert (alice.message_count, alice.value_count, alice.value_sum, alice.value_min,
            alice.value_max, alice.value_avg) == (3, 2, 1.5, -1.0, 2.5, 0.75)


def test_a_redelivered_batch_inserts_nothing_and_leaves_user_stats_unchanged(store):
    storage, db = store
    batch = [row("alice", n, value=float(n)) for n in range(1, 6)] + [row("bob", 9)]
    assert storage.write(batch) == 6
    before_rows, before_stats = rows(db), stats_without_updated_at(db)

    assert storage.write(batch) == 0
    assert storage.write(list(reversed(batch))) == 0

    assert rows(db) == before_rows
    assert stats_without_updated_at(db) == before_stats
    assert stats_mismatches(db) == []


def test_a_batch_mixing_new_rows_and_duplicates_counts_only_the_new_ones(store):
    storage, db = store
    assert storage.write([row("alice", n, value=float(n)) for n in range(1, 4)]) == 3
    # Duplicates carry other values and times: if they were counted, the aggregates would move.
    mixed = [replace(row("alice", 2, value=1000.0, received_offset_ms=-50), msg_id="m-2"),
             row("alice", 4, value=-7.0, received_offset_ms=-20),
             replace(row("alice", 3, value=None, received_offset_ms=99), msg_id="m-3"),
             row("carol", 5), row("alice", 6, value=0.5)]
    assert storage.write(mixed) == 3
    assert row_count(db) == 6
    assert stats_mismatches(db) == []
    with db.connect() as conn:
        alice = conn.execute(sa.select(user_stats).where(user_stats.c.user_id == "alice")).one()
    assert (alice.message_count, alice.value_count, alice.value_min, alice.value_max) == \
        (5, 5, -7.0, 3.0)


def test_the_same_msg_id_twice_in_one_batch_is_inserted_and_counted_once(store):
    storage, db = store
    first = row("alice", 1, value=1.0, message="first")
    again = replace(row("alice", 2, value=50.0, message="again", received_offset_ms=-100),
                    msg_id="m-1")
    assert storage.write([first, row("alice", 3, value=3.0), again]) == 2
    with db.connect() as conn:
        kept = conn.execute(sa.select(messages.c.message, messages.c.value)
                            .where(messages.c.msg_id == "m-1")).all()
    assert [tuple(k) for k in kept] == [("first", 1.0)]
    assert stats_mismatches(db) == []


def test_a_large_batch_with_scattered_duplicates_keeps_aggregates_exact(store):
    storage, db = store
    users = [f"user{u}" for u in range(7)]
    first = [row(users[n % 7], n, value=(n % 13) - 6.5 if n % 3 else None,
                 msg_id=f"m-{n}") for n in range(1500)]
    assert storage.write(first[::2]) == 750
    # Every row once more, the even ones being redeliveries, plus in-batch repeats.
    assert storage.write(first + first[100:900:7]) == 750
    assert row_count(db) == 1500
    assert stats_mismatches(db) == []


def test_aggregates_per_key_are_kept_beside_the_users_and_exact_under_redelivery(store):
    storage, db = store
    keyed = [row(f"user{n % 3}", n, value=(n % 7) - 3.5 if n % 4 else None,
                 key=("temp", "rain", None, "wind é")[n % 4], msg_id=f"m-{n}")
             for n in range(400)]
    assert storage.write(keyed[:250]) == 250
    assert storage.write(keyed[100:] + keyed[:50]) == 150  # a redelivery, then the rest
    assert stats_mismatches(db) == []
    with db.connect() as conn:
        counted = conn.execute(sa.select(key_stats.c.user_id, key_stats.c.key,
                                         key_stats.c.message_count)
                               .order_by(key_stats.c.user_id, key_stats.c.key)).all()
    assert len(counted) == 9 and sum(r.message_count for r in counted) == 300


def test_refused_data_raises_row_rejected_and_rolls_back_the_whole_batch(store):
    storage, db = store
    storage.write([row("alice", 1, value=1.0)])
    before = stats_without_updated_at(db)
    bad = replace(row("alice", 3), message=None)  # NOT NULL
    with pytest.raises(RowRejected):
        storage.write([row("alice", 2, value=5.0), bad, row("bob", 4)])
    assert [r.msg_id for r in rows(db)] == ["m-1"]
    assert stats_without_updated_at(db) == before
    # The storage is still usable after a refusal.
    assert storage.write([row("alice", 2, value=5.0)]) == 1
    assert stats_mismatches(db) == []


@pytest.mark.parametrize("field, bad", [("message", "x" * 70_000),
                                        ("timestamp", "not a date"),
                                        ("msg_id", "m" * 65)])
def test_mysql_refuses_data_it_cannot_store_faithfully(mysql_db, field, bad):
    storage = open_storage(TEST_DATABASE_URL)
    try:
        with pytest.raises(RowRejected):
            storage.write([replace(row("alice", 1), **{field: bad})])
        assert row_count(mysql_db) == 0
    finally:
        storage.close()


#: Strings that only arrive intact if every character is quoted right.
AWKWARD = ["it's", 'say "hi"', "back\\slash", "nul\0byte", "line\nfeed", "carriage\rreturn",
           "ctrl-z\x1a", "%s %(x)s %%", "'); DELETE FROM messages; --", "\\'", "é'\\\n\x1a\"\0",
           "snow ☃ and 🚀 in the middle", "日本語の'引用'", ""]


def test_every_character_is_stored_exactly_as_sent(store):
    storage, db = store
    batch = [replace(row("alice", n, value=value, key=text[:255] or None), message=text)
             for n, (text, value) in enumerate(zip(AWKWARD, [
                 0.1, -2.0**53, 2.0**53, 1e-300, 7, -0.0, None, 123456789.125, 1.5e15, 3,
                 None, 2.5, 9007199254740991, -1]))]
    batch.append(replace(row("o'brien\\", 99), msg_id="a:b.c-d_e"))
    assert storage.write(batch) == len(batch)
    with db.connect() as conn:
        stored = conn.execute(sa.select(
            messages.c.user_id, messages.c.msg_id, messages.c.message, messages.c.value,
            messages.c.key, messages.c.received_at, messages.c.timestamp,
            messages.c.stream_id).order_by(messages.c.id)).all()
    assert [(r.user_id, r.msg_id, r.message, r.value, r.key, r.stream_id) for r in stored] == [
        (r.user_id, r.msg_id, r.message, r.value, r.key, r.stream_id) for r in batch]
    assert [round(r.received_at.timestamp() * 1000) for r in stored] == [
        r.received_ms for r in batch]
    assert {r.timestamp.isoformat(timespec="milliseconds") for r in stored} == {
        "2026-11-26T10:00:00.123"}
    assert stats_mismatches(db) == []


def test_a_session_without_backslash_escapes_still_stores_every_character(mysql_db):
    storage = open_storage(TEST_DATABASE_URL)
    try:
        storage.write([row("alice", 0)])  # connected
        with storage._conn.cursor() as cursor:
            cursor.execute("SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')")
        storage._conn.commit()
        batch = [replace(row("alice", n + 1), message=text) for n, text in enumerate(AWKWARD)]
        assert storage.write(batch) == len(batch)
        assert [r.message for r in rows(mysql_db, messages.c.message)][1:] == AWKWARD
    finally:
        storage.close()


def test_a_batch_longer_than_one_statement_is_sent_in_several_and_counted_once(mysql_db):
    storage = open_storage(TEST_DATABASE_URL)
    storage.STATEMENT_CHARS = 2_000  # type: ignore[attr-defined]  # about ten rows a statement
    try:
        first = [row(f"user{n % 7}", n, value=float(n)) for n in range(150)]
        assert storage.write(first) == 150
        again = first[40:90] + [row(f"user{n % 7}", n, value=float(n)) for n in range(150, 230)]
        assert storage.write(again) == 80
        assert row_count(mysql_db) == 230
        assert [r.msg_id for r in rows(mysql_db)] == [f"m-{n}" for n in range(230)]
        assert stats_mismatches(mysql_db) == []
    finally:
        storage.close()


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_a_value_mysql_cannot_hold_is_refused_data_and_nothing_is_written(mysql_db, value):
    storage = open_storage(TEST_DATABASE_URL)
    try:
        with pytest.raises(RowRejected, match="can not be stored"):
            storage.write([row("alice", 1, value=1.0), row("alice", 2, value=value)])
        assert row_count(mysql_db) == 0
        assert storage.write([row("alice", 1, value=1.0)]) == 1
    finally:
        storage.close()


def test_an_unreachable_mysql_raises_storage_unavailable():
    nowhere = make_url(TEST_DATABASE_URL).set(host="127.0.0.1", port=free_port())
    storage = open_storage(nowhere.render_as_string(hide_password=False))
    with pytest.raises(StorageUnavailable):
        storage.write([row("alice", 1)])
    with pytest.raises(StorageUnavailable):
        storage.dead_letter("alice", "1-1", "m-1", "{}", "error", 1)


def test_an_unopenable_sqlite_file_raises_storage_unavailable(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'missing-dir' / 'tributary.db'}")
    with pytest.raises(StorageUnavailable):
        storage.write([row("alice", 1)])


def test_a_killed_mysql_connection_raises_storage_unavailable_then_reconnects(mysql_db):
    storage = open_storage(TEST_DATABASE_URL)
    try:
        assert storage.write([row("alice", 1)]) == 1
        connection_id = storage._conn.thread_id()
        with mysql_db.connect() as conn:
            conn.exec_driver_sql(f"KILL CONNECTION {int(connection_id)}")
        with pytest.raises(StorageUnavailable):
            storage.write([row("alice", 2)])
        assert storage.write([row("alice", 2)]) == 1
        assert [r.msg_id for r in rows(mysql_db)] == ["m-1", "m-2"]
        assert stats_mismatches(mysql_db) == []
    finally:
        storage.close()


def test_a_lock_wait_timeout_is_an_outage_not_refused_data(mysql_db):
    storage = open_storage(TEST_DATABASE_URL)
    url = make_url(TEST_DATABASE_URL)
    raw = pymysql.connect(host=url.host, port=url.port or 3306, user=url.username,
                          password=url.password or "", database=url.database, autocommit=False)
    try:
        storage.write([row("alice", 1)])
        with raw.cursor() as cursor:
            cursor.execute("SELECT * FROM user_stats WHERE user_id = 'alice' FOR UPDATE")
        with storage._cursor() as cursor:
            cursor.execute("SET SESSION innodb_lock_wait_timeout = 1")
        with pytest.raises(StorageUnavailable):
            storage.write([row("alice", 2)])
    finally:
        with contextlib.suppress(Exception):
            raw.rollback()
        raw.close()
        storage.close()
    assert [r.msg_id for r in rows(mysql_db)] == ["m-1"]


def test_dead_letters_are_recorded_once_per_entry(store):
    storage, db = store
    storage.dead_letter("alice", "5-0", "m-5", '{"msg_id":"m-5"}', "refused once", 1)
    with db.begin() as conn:
        conn.exec_driver_sql("UPDATE dead_letters SET replayed_at = created_at")
    storage.dead_letter("alice", "5-0", "m-5", '{"msg_id":"m-5"}', "refused again", 5)
    storage.dead_letter("alice", "6-0", None, "not json", "not a Tributary message", 1)
    letters = dead_letter_rows(db)
    assert [(d.user_id, d.stream_id, d.msg_id, d.payload, d.error, d.attempts, d.replayed_at)
            for d in letters] == [
        ("alice", "5-0", "m-5", '{"msg_id":"m-5"}', "refused again", 5, None),
        ("alice", "6-0", None, "not json", "not a Tributary message", 1, None)]
