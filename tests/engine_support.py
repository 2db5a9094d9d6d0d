"""Helpers for the engine tests: put messages into user streams exactly the way the web gateway
does (engine.messages.validate, then ingest.lua through engine.streams.append_all), and read
back what the engine made of them."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import redis
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from engine import keys, streams
from engine.db import create_db, normalize_url
from engine.messages import validate
from engine.schema import dead_letters, key_stats, messages, user_stats
from webapp.users import User, account_record

#: No rate limit and no backlog cap: the tests decide how much goes in.
UNLIMITED = streams.Limits("http", rate=0, burst=1, max_backlog=10**9)

_sequence = itertools.count(1)


def payload(msg_id: str | None = None, message: str = "hello", *, value: float | None = None,
            key: str | None = None, timestamp: str = "2026-11-26T10:00:00.000Z"
            ) -> dict[str, Any]:
    """A client message as a socket.io client would send it."""
    body: dict[str, Any] = {"msg_id": msg_id or f"m-{next(_sequence)}", "message": message,
                            "timestamp": timestamp}
    if value is not None:
        body["value"] = value
    if key is not None:
        body["key"] = key
    return body


def append_many(client: redis.Redis, batches: Mapping[str, Sequence[dict[str, Any]]]
                ) -> dict[str, list[str]]:
    """Append each user's payloads in one pipeline, as the gateway's flusher does; returns the
    entry ids per user. Queues created by the append are registered, as the gateway does."""
    users = [user for user, items in batches.items() if items]
    replies = streams.append_all(client, [
        (user, UNLIMITED, [validate(item, user, 65535).data for item in batches[user]])
        for user in users])
    return {user: _entry_ids(reply) for user, reply in zip(users, replies, strict=True)}


def append_raw(client: redis.Redis, user: str, bodies: Sequence[bytes]) -> list[str]:
    """Append stream entry bodies as they are, unvalidated (entries written by an older release
    or by hand), through the same script as the gateway; returns their entry ids."""
    [reply] = streams.append_all(client, [(user, UNLIMITED, list(bodies))])
    return _entry_ids(reply)


def _entry_ids(reply: Any) -> list[str]:
    if isinstance(reply, Exception):
        raise reply
    _, statuses = streams.parse_append(reply)
    assert all("-" in status for status in statuses), statuses
    return statuses


def append(client: redis.Redis, user: str, items: Sequence[dict[str, Any]]) -> list[str]:
    """Append one user's payloads; returns their entry ids."""
    return append_many(client, {user: items})[user]


def stream_order(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-", 1)
    return int(ms), int(seq)


# --- Redis state ---------------------------------------------------------------------------------

def open_queue(client: redis.Redis, user_id: str, instance: str) -> bool:
    """Count a connection of `user_id` on web instance `instance` and make its queue, as an
    authorized connect does (streams.open_authorized_many, an enabled account cached for a
    minute; then the queue registered when its stream was made now, as the gateway does).
    Returns whether the stream was made now."""
    account = account_record(User(1, user_id, "user", False))
    [answer] = streams.open_authorized_many(
        client, [(user_id, f"test-token-{user_id}", time.time(), account)], instance, 60)
    assert not isinstance(answer, Exception), answer
    revoked, reply = answer
    assert not revoked and reply[0] == "open", reply
    created = bool(int(reply[1]))
    if created:
        streams.register(client, [user_id])
    return created


def is_registered(client: redis.Redis, user_id: str) -> bool:
    """Whether `user_id`'s queue is in the registry."""
    return bool(client.sismember(keys.queues_of(user_id), user_id))


def stream_keys(client: redis.Redis) -> list[str]:
    """Every Tributary stream key in the database (SCAN), registered or not."""
    return sorted(client.scan_iter(match=keys.STREAM_PATTERN, count=1000))


def user_keys_left(client: redis.Redis) -> list[str]:
    """Every per-user key (`ingest:{…}` and its companions) still in the database."""
    return sorted(client.scan_iter(match="ingest:*", count=1000))


def pending_total(client: redis.Redis, users: Iterable[str]) -> int:
    """Entries delivered to some consumer and not yet acknowledged, over these users."""
    total = 0
    for user in users:
        if client.exists(keys.stream(user)):
            total += int(client.xpending(keys.stream(user), keys.GROUP)["pending"])
    return total


def backlog_total(client: redis.Redis, users: Iterable[str]) -> int:
    return sum(int(client.xlen(keys.stream(user))) for user in users)


def consumers(client: redis.Redis, user: str) -> dict[str, int]:
    """Consumer name -> pending entries, from XINFO CONSUMERS."""
    return {info["name"]: int(info["pending"])
            for info in client.xinfo_consumers(keys.stream(user), keys.GROUP)}


# --- database state ------------------------------------------------------------------------------

def rows(db: sa.engine.Engine, *columns: sa.Column[Any]) -> list[sa.Row[Any]]:
    cols = columns or (messages.c.id, messages.c.user_id, messages.c.msg_id,
                       messages.c.stream_id)
    with db.connect() as conn:
        return list(conn.execute(sa.select(*cols).order_by(messages.c.id)).all())


def row_count(db: sa.engine.Engine) -> int:
    with db.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(messages)).scalar_one())


def written_ids(db: sa.engine.Engine) -> list[tuple[str, str]]:
    """(user_id, msg_id) of every row, duplicates kept."""
    return [(row.user_id, row.msg_id) for row in rows(db)]


def dead_letter_rows(db: sa.engine.Engine) -> list[sa.Row[Any]]:
    with db.connect() as conn:
        return list(conn.execute(sa.select(dead_letters).order_by(dead_letters.c.id)).all())


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def _moment(value: Any) -> dt.datetime | None:
    # SQLite hands MIN()/MAX() of a DATETIME column back as text; MySQL as a datetime.
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value))


def stats_mismatches(db: sa.engine.Engine) -> list[str]:
    """Differences between `user_stats` and `key_stats` and the same figures computed with
    GROUP BY over `messages`; empty when they agree."""
    m = messages.c
    return (_mismatches(db, user_stats, [m.user_id], [user_stats.c.user_id]) +
            _mismatches(db, key_stats, [m.user_id, m.key], [key_stats.c.user_id,
                                                            key_stats.c.key],
                        where=m.key.is_not(None)))


def _mismatches(db: sa.engine.Engine, table: sa.Table, group: list[Any], ident: list[Any],
                where: Any = None) -> list[str]:
    m = messages.c
    grouped = sa.select(*group, sa.func.count().label("count"),
                        sa.func.count(m.value).label("value_count"),
                        sa.func.sum(m.value).label("sum"), sa.func.avg(m.value).label("avg"),
                        sa.func.min(m.value).label("min"), sa.func.max(m.value).label("max"),
                        sa.func.min(m.received_at).label("first"),
                        sa.func.max(m.received_at).label("last")).group_by(*group)
    if where is not None:
        grouped = grouped.where(where)
    with db.connect() as conn:
        expected = {tuple(row[:len(group)]): row for row in conn.execute(grouped)}
        actual = {tuple(getattr(row, col.name) for col in ident): row
                  for row in conn.execute(sa.select(table))}
    problems = []
    for ident_value in sorted(set(expected) | set(actual)):
        who = f"{table.name} {'/'.join(map(str, ident_value))}"
        want, got = expected.get(ident_value), actual.get(ident_value)
        if want is None or got is None:
            problems.append(f"{who}: only in {table.name if want is None else 'messages'}")
            continue
        pairs = {"count": (got.message_count, want.count),
                 "value_count": (got.value_count, want.value_count),
                 "first_seen": (_moment(got.first_seen), _moment(want.first)),
                 "last_seen": (_moment(got.last_seen), _moment(want.last))}
        for name, (have, should) in pairs.items():
            if have != should:
                problems.append(f"{who}: {name} is {have!r}, GROUP BY says {should!r}")
        floats = {"sum": (got.value_sum, want.sum), "avg": (got.value_avg, want.avg),
                  "min": (got.value_min, want.min), "max": (got.value_max, want.max)}
        for name, (have, should) in floats.items():
            if not _close(have, None if should is None else float(should)):
                problems.append(f"{who}: {name} is {have!r}, GROUP BY says {should!r}")
    return problems


def order_violations(db: sa.engine.Engine) -> list[str]:
    """Users whose rows, in `id` order, do not have increasing stream ids."""
    last: dict[str, tuple[int, int]] = {}
    problems = []
    for row in rows(db):
        position = stream_order(row.stream_id)
        if row.user_id in last and position <= last[row.user_id]:
            problems.append(f"{row.user_id}: row {row.id} ({row.stream_id}) after "
                            f"{last[row.user_id]}")
        last[row.user_id] = position
    return problems


def commit_delays(db: sa.engine.Engine) -> dict[str, float]:
    """Per msg_id: seconds between the entry's XADD (received_at) and its row's commit."""
    with db.connect() as conn:
        found = conn.execute(sa.select(messages.c.msg_id, messages.c.received_at,
                                       messages.c.committed_at)).all()
    return {r.msg_id: (_moment(r.committed_at) - _moment(r.received_at)).total_seconds()
            for r in found}


class EngineEvents:
    """What engines publish on the socket.io message queue (Redis pub/sub), as a web process
    would receive it: one `stats` emit per sweep, `committed` receipts per batch."""

    def __init__(self, client: redis.Redis, channel: str) -> None:
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(channel)
        self.received: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
        while True:
            message = self.pubsub.get_message(timeout=0.01)
            if message is None:
                return self.received
            body = json.loads(message["data"])
            if body.get("method") == "emit":
                self.received.append({"event": body["event"], "room": body.get("room"),
                                      "data": body["data"][0]})

    def sweeps(self) -> list[dict[str, Any]]:
        return [e["data"] for e in self.poll() if e["event"] == "stats"]

    def close(self) -> None:
        self.pubsub.close()


@contextlib.contextmanager
def scratch_mysql_database(base_url: str, tag: str) -> Iterator[str]:
    """A new, empty MySQL/MariaDB database for one test, dropped afterwards; yields its URL."""
    url = normalize_url(base_url)
    name = f"tributary_scratch_{tag}_{os.getpid()}"
    server = create_db(url.set(database="").render_as_string(hide_password=False),
                       poolclass=NullPool)
    with server.begin() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 "
                             "COLLATE utf8mb4_bin")
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with server.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        server.dispose()
