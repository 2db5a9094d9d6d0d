"""The accounts of connects that miss the cache are looked up many at a time: connects waiting
together share one query, exact names only; the loader itself writes nothing to Redis (each
connect caches its account in the round trip that opens it: test_connect_round_trips.py)."""

from __future__ import annotations

import gevent
import pytest
import sqlalchemy as sa

from engine import keys
from engine.db import create_db
from engine.errors import StorageUnavailable
from tests.conftest import issue_token
from tests.gateway_support import join_all
from webapp.accounts import AccountLoader, find_users
from webapp.users import set_disabled


def count_queries(db: sa.engine.Engine) -> list[str]:
    statements: list[str] = []
    sa.event.listen(db, "before_cursor_execute",
                    lambda conn, cursor, statement, *args: statements.append(statement))
    return statements


def test_find_users_takes_exact_names_only(mysql_backend):
    for name in ("alice", "bob"):
        issue_token(mysql_backend, name)

    found = find_users(mysql_backend.db, ["alice", "bob", "nobody", "alice ", "bob\x00", ""])

    assert sorted(found) == ["alice", "bob"]
    assert found["alice"].username == "alice" and found["alice"].role == "user"


def test_connects_missing_the_cache_together_share_one_query(mysql_backend):
    names = [f"user{i}" for i in range(20)]
    for name in names:
        issue_token(mysql_backend, name)
    set_disabled(mysql_backend.db, "user3", True, redis=mysql_backend.redis)
    loader = AccountLoader(mysql_backend.db)
    queries = count_queries(mysql_backend.db)
    asked = [names[i % 20] for i in range(50)] + ["nobody", "nobody"]

    loads = [gevent.spawn(loader.load, name) for name in asked]
    join_all(loads)

    assert [load.value.username if load.value else None for load in loads] == \
        [name if name != "nobody" else None for name in asked]
    assert len(queries) == 1, queries
    assert [load.value.disabled for load in loads[:20]] == [i == 3 for i in range(20)]
    assert not mysql_backend.redis.keys(keys.account("*"))


def test_a_database_that_cannot_be_reached_fails_every_waiting_connect_and_caches_nothing(
        mysql_backend):
    gone = create_db("mysql+pymysql://root@127.0.0.1:1/tributary", pool_size=1)
    loader = AccountLoader(gone)
    try:
        loads = [gevent.spawn(loader.load, name) for name in ("alice", "bob", "alice")]
        gevent.get_hub().loop.update_now()  # see gateway_support.join_all
        assert len(gevent.joinall(loads, timeout=60)) == len(loads)
        for load in loads:
            assert isinstance(load.exception, StorageUnavailable)
        assert not mysql_backend.redis.keys(keys.account("*"))
        # The next connect is looked up again (nothing was remembered from the failure).
        with pytest.raises(StorageUnavailable):
            loader.load("carol")
    finally:
        gone.dispose()


def test_the_loader_keeps_one_connection_sees_every_change_and_survives_losing_it(
        mysql_backend):
    issue_token(mysql_backend, "alice")
    loader = AccountLoader(mysql_backend.db)
    assert loader.load("alice").disabled is False
    kept = loader._conn
    # A change committed after the first read is seen by the next one (no snapshot is held).
    set_disabled(mysql_backend.db, "alice", True, redis=mysql_backend.redis)
    assert loader.load("alice").disabled is True
    assert loader._conn is kept
    # The server closes the kept connection (a restart, wait_timeout): the next look-up
    # takes another and answers.
    with mysql_backend.db.connect() as conn:
        thread_id = kept.connection.dbapi_connection.thread_id()
        conn.exec_driver_sql(f"KILL CONNECTION {int(thread_id)}")
    assert loader.load("alice").username == "alice"
    assert loader._conn is not kept
