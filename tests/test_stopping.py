"""Stopping the engine: a first SIGTERM finishes and acknowledges the batch in hand and exits 0;
a second one exits at once with status 1, leaving its entries to the next engine."""

from __future__ import annotations

import contextlib
import signal
import time

import pymysql
import pytest
from sqlalchemy.engine import make_url

from engine import keys
from tests.conftest import TEST_DATABASE_URL, Backend, wait_until
from tests.engine_support import (
    append,
    append_many,
    payload,
    pending_total,
    row_count,
    stats_mismatches,
    written_ids,
)

USERS = ["alice", "bob", "carol"]


def exit_status(process, within: float) -> tuple[int, float]:
    started = time.monotonic()
    status = process.popen.wait(within)
    return status, time.monotonic() - started


def stop_twice(process, within: float) -> tuple[int, float]:
    """SIGTERM, then SIGTERM again until the process is gone: two signals sent back to back
    may reach Python's handler as one, so the second is repeated until it lands."""
    started = time.monotonic()
    process.signal(signal.SIGTERM)

    def gone() -> bool:
        process.signal(signal.SIGTERM)
        return process.popen.poll() is not None

    wait_until(gone, within, interval=0.05, what="the engine to exit")
    return int(process.popen.returncode), time.monotonic() - started


def test_sigterm_during_a_drain_finishes_and_acknowledges_the_batch_in_hand_and_exits_0(
        backend, start_engine):
    append_many(backend.redis, {user: [payload() for _ in range(100)] for user in USERS})
    engine = start_engine(backend, BATCH_MAX=100, pause_after_commit=1)
    wait_until(lambda: "paused after commit" in engine.log(), 10, what="the first commit")

    engine.signal(signal.SIGTERM)
    append(backend.redis, "alice", [payload(f"late-{n}") for n in range(10)])
    status, took = exit_status(engine, 15)

    assert status == 0, engine.log()
    # The 300 entries read before the signal were all committed and acknowledged; the ones
    # that arrived after it were not read.
    assert row_count(backend.db) == 300
    assert pending_total(backend.redis, USERS) == 0
    assert backend.redis.xlen(keys.stream("alice")) == 10
    assert not any(msg.startswith("late-") for _, msg in written_ids(backend.db))
    assert stats_mismatches(backend.db) == []
    log = engine.log()
    assert "stopping" in log and "stopped (warm)" in log
    # It said goodbye: no heartbeat, no lease left behind.
    assert backend.redis.smembers(keys.ENGINES) == set()
    assert not any(backend.redis.exists(keys.lease(user)) for user in USERS)
    assert took < 10


def test_a_second_sigterm_exits_at_once_with_status_1_and_the_next_engine_recovers_its_entries(
        backend, start_engine):
    append_many(backend.redis, {user: [payload() for _ in range(50)] for user in USERS})
    engine = start_engine(backend, pause_after_commit=60, LEASE_TTL=1)
    wait_until(lambda: "paused after commit" in engine.log(), 10, what="the first commit")

    status, took = stop_twice(engine, 10)

    assert status == 1 and took < 5
    assert "second stop signal" in engine.log()
    assert "Traceback" not in engine.log()
    assert pending_total(backend.redis, USERS) == 150  # committed, never acknowledged

    start_engine(backend, CLAIM_IDLE_MS=500, LEASE_TTL=1)

    wait_until(lambda: pending_total(backend.redis, USERS) == 0, 15,
               what="the next engine to recover the entries")
    assert row_count(backend.db) == 150
    assert stats_mismatches(backend.db) == []


@pytest.fixture
def production(redis_db, mysql_db) -> Backend:
    """Redis 7 and MariaDB only: the lock the tests hold must be one a signal can interrupt
    the wait for (an SQLite lock wait sits in C code, out of reach of signal handlers)."""
    return Backend("mysql", redis_db.url, TEST_DATABASE_URL, redis_db.client, mysql_db,
                   redis_db.version)


@pytest.fixture
def messages_locked(mysql_db):
    """Hold a write lock on `messages` from another session until the test releases it."""
    url = make_url(TEST_DATABASE_URL)
    conn = pymysql.connect(host=url.host, port=url.port or 3306, user=url.username,
                           password=url.password or "", database=url.database)
    locked = {"held": False}

    def lock() -> None:
        with conn.cursor() as cursor:
            cursor.execute("LOCK TABLES messages WRITE")
        locked["held"] = True

    def unlock() -> None:
        if locked["held"]:
            with conn.cursor() as cursor:
                cursor.execute("UNLOCK TABLES")
            locked["held"] = False

    yield lock, unlock
    with contextlib.suppress(Exception):
        unlock()
    conn.close()


def test_a_second_sigterm_while_the_database_blocks_a_write_exits_at_once_with_status_1(
        production, messages_locked, start_engine):
    backend = production
    lock, unlock = messages_locked
    lock()
    append_many(backend.redis, {user: [payload() for _ in range(20)] for user in USERS})
    engine = start_engine(backend, LEASE_TTL=1)
    wait_until(lambda: pending_total(backend.redis, USERS) == 60, 10,
               what="the engine to read the entries and start its INSERT")

    status, took = stop_twice(engine, 10)

    assert status == 1, engine.log()
    assert took < 5
    log = engine.log()
    assert "second stop signal" in log
    assert "unavailable" not in log and "Traceback" not in log
    unlock()
    assert row_count(backend.db) == 0
    start_engine(backend, CLAIM_IDLE_MS=500, LEASE_TTL=1)
    wait_until(lambda: row_count(backend.db) == 60 and
               pending_total(backend.redis, USERS) == 0, 15, what="the next engine's writes")
    assert stats_mismatches(backend.db) == []


def test_a_warm_stop_that_hangs_is_cut_off_after_stop_timeout(production, messages_locked,
                                                              start_engine):
    backend = production
    lock, unlock = messages_locked
    lock()
    append(backend.redis, "alice", [payload() for _ in range(5)])
    engine = start_engine(backend, STOP_TIMEOUT=1, LEASE_TTL=1)
    wait_until(lambda: pending_total(backend.redis, ["alice"]) == 5, 10,
               what="the engine to start its INSERT")

    engine.signal(signal.SIGTERM)
    status, took = exit_status(engine, 10)

    assert status == 1, engine.log()
    assert took < 4
    log = engine.log()
    assert log.count("stop timed out after 1s; exiting, entries in hand stay pending and will "
                     "be claimed") == 1, log
    assert "stopped (cold)" in log and "Traceback" not in log, log
    unlock()
    start_engine(backend, CLAIM_IDLE_MS=500, LEASE_TTL=1)
    wait_until(lambda: row_count(backend.db) == 5 and
               pending_total(backend.redis, ["alice"]) == 0, 15, what="the next engine's writes")
