"""The gateway's group commit on one Redis: a flush's users share ingest.lua calls
(streams.USERS_PER_APPEND to a call), each user's part as independent as if it had its own."""

from __future__ import annotations

import math

import pytest
from redis.exceptions import ResponseError

from engine import keys, scripts, streams
from engine.streams import Limits
from tests.engine_support import is_registered

UNLIMITED = Limits("socket", 0, 0, 1_000_000)


def script_calls(client) -> int:
    stats = client.info("commandstats")
    return sum(stats.get(name, {}).get("calls", 0) for name in ("cmdstat_evalsha",
                                                                 "cmdstat_eval"))


def test_a_flush_of_many_users_takes_a_call_per_users_per_append(private_redis):
    client = private_redis.client()
    scripts.load_all(client)  # no NOSCRIPT round in the count
    users = [f"u{n}" for n in range(streams.USERS_PER_APPEND * 2 + 5)]
    before = script_calls(client)
    replies = streams.append_all(client, [(user, UNLIMITED, [f"{user}-{n}".encode()
                                                            for n in range(3)])
                                          for user in users])
    assert script_calls(client) - before == math.ceil(len(users) / streams.USERS_PER_APPEND)
    for user, reply in zip(users, replies, strict=True):
        created, statuses = streams.parse_append(reply)
        assert created and all("-" in status for status in statuses)
        bodies = [fields["d"] for _, fields in client.xrange(keys.stream(user))]
        assert bodies == [f"{user}-{n}" for n in range(3)]  # each user's own, in order
        assert is_registered(client, user)


def test_one_users_failure_leaves_the_others_in_its_call_appended(redis_db):
    client = redis_db.client
    client.set(keys.stream("broken"), "not a stream")  # every command on it fails
    replies = streams.append_all(client, [(user, UNLIMITED, [b"x", b"y"])
                                          for user in ("before", "broken", "after")])
    assert isinstance(replies[1], ResponseError)
    for user in ("before", "after"):
        assert not isinstance(replies[0 if user == "before" else 2], Exception)
        assert client.xlen(keys.stream(user)) == 2
    assert client.get(keys.stream("broken")) == "not a stream"


@pytest.mark.parametrize("order", ["limited first", "limited last"])
def test_limits_apply_per_user_within_one_call(redis_db, order):
    client = redis_db.client
    limited = Limits("socket", rate=1, burst=2, max_backlog=100)
    capped = Limits("socket", rate=0, burst=0, max_backlog=1)
    appends = [("slow", limited, [b"1", b"2", b"3"]), ("full", capped, [b"1", b"2"]),
               ("free", UNLIMITED, [b"1", b"2", b"3"])]
    if order == "limited last":
        appends.reverse()
    replies = dict(zip((user for user, _, _ in appends),
                       streams.append_all(client, appends), strict=True))
    assert streams.parse_append(replies["slow"])[1][2] == streams.RATE_LIMITED
    assert streams.parse_append(replies["full"])[1][1] == streams.BACKLOG_FULL
    assert all("-" in status for status in streams.parse_append(replies["free"])[1])
    assert [client.xlen(keys.stream(user)) for user in ("slow", "full", "free")] == [2, 1, 3]
