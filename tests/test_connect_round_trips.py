"""Connects waiting together are authorized and recorded in one Redis round trip (the gateway's
connector), each with its own answer: opened and counted, refused for a revoked token and
counted out again, or failed with Redis down."""

from __future__ import annotations

import time

import gevent
import orjson
import pytest

from engine import keys, streams
from engine.connections import connect_redis
from engine.errors import RedisUnavailable
from engine.settings import Settings
from tests.conftest import TEST_JWT_SECRET, issue_token, make_jwt
from tests.gateway_support import join_all
from webapp.accounts import AccountLoader
from webapp.auth import AccessTokens, admit_connection
from webapp.gateway import Gateway
from webapp.users import ACCOUNT_CACHE_SECONDS, User, account_record


def gateway_on(redis_url: str) -> Gateway:
    settings = Settings.load(environ={"REDIS_URL": redis_url}, env_file=None)
    return Gateway(settings, connect_redis(settings))


def test_connects_waiting_together_share_one_round_trip_and_each_gets_its_answer(
        mysql_backend, monkeypatch):
    redis = mysql_backend.redis
    for i in range(5):
        redis.set(keys.account(f"user{i}"), account_record(User(i + 1, f"user{i}", "user", False)))
    redis.set(keys.revoked_token("jti-revoked"), 1)
    gateway = gateway_on(mysql_backend.redis_url)
    round_trips: list[int] = []
    real = streams.open_authorized_many
    monkeypatch.setattr(streams, "open_authorized_many",
                        lambda client, connects, *args: round_trips.append(len(connects))
                        or real(client, connects, *args))
    now = time.time()
    asked = [(f"sid{i}", f"user{i % 5}", f"jti{i}") for i in range(30)]
    asked += [("sid-revoked", "user0", "jti-revoked"), ("sid-nobody", "nobody", "jti-nobody")]

    connects = [gevent.spawn(gateway.connected, sid, user, jti, now) for sid, user, jti in asked]
    join_all(connects)

    assert round_trips == [32]
    assert [c.value[0] for c in connects] == ["open"] * 30 + ["revoked", "uncached"]
    assert {int(redis.hget(keys.connections(f"user{i}"), gateway.instance)) for i in range(5)} \
        == {6}  # the revoked token's connect was counted out again
    assert sorted(streams.registered_users(redis)) == [f"user{i}" for i in range(5)]
    assert len(gateway.users) == 30 and "sid-revoked" not in gateway.users


def test_a_connect_missing_the_cache_is_opened_and_cached_by_the_round_trip_that_brings_it(
        mysql_backend):
    redis = mysql_backend.redis
    gateway = gateway_on(mysql_backend.redis_url)
    now = time.time()
    assert gateway.connected("sid0", "alice", "jti0", now) == ("uncached", "")
    assert not redis.exists(keys.account("alice"))

    read = account_record(User(7, "alice", "user", False))
    status, detail = gateway.connected("sid0", "alice", "jti0", now, account=read)

    assert (status, orjson.loads(detail)) == ("open", {"id": 7, "role": "user",
                                                       "disabled": False})
    assert redis.get(keys.account("alice")) == read.decode()
    assert 0 < redis.ttl(keys.account("alice")) <= ACCOUNT_CACHE_SECONDS
    assert int(redis.hget(keys.connections("alice"), gateway.instance)) == 1
    # A disabled account as read is cached and refused; nothing is counted or created.
    disabled = account_record(User(8, "bob", "user", True))
    assert gateway.connected("sid1", "bob", "jti1", now, account=disabled)[0] == "disabled"
    assert orjson.loads(redis.get(keys.account("bob")))["disabled"] is True
    assert not redis.exists(keys.connections("bob"), keys.stream("bob"))
    # A copy cached meanwhile (another process's connect) is what counts.
    enabled = account_record(User(8, "bob", "user", False))
    assert gateway.connected("sid2", "bob", "jti2", now, account=enabled)[0] == "disabled"
    # A revoked token is refused with the account passed too, and counted out again.
    redis.set(keys.revoked_token("jti-revoked"), 1)
    redis.delete(keys.account("alice"))
    assert gateway.connected("sid3", "alice", "jti-revoked", now, account=read) == \
        ("revoked", None)
    assert int(redis.hget(keys.connections("alice"), gateway.instance)) == 1


def test_an_uncached_connect_costs_one_query_and_two_round_trips(mysql_backend, monkeypatch):
    issue_token(mysql_backend, "carol")
    gateway = gateway_on(mysql_backend.redis_url)
    accounts = AccountLoader(mysql_backend.db)
    round_trips: list[list[bool]] = []
    real = streams.open_authorized_many
    monkeypatch.setattr(streams, "open_authorized_many",
                        lambda client, connects, *args: round_trips.append(
                            [account is not None for *_, account in connects])
                        or real(client, connects, *args))
    token = make_jwt("carol")

    user, claims = admit_connection(gateway, AccessTokens(TEST_JWT_SECRET), accounts, token,
                                    "sid-carol")

    assert (user.username, claims["sub"]) == ("carol", "carol")
    assert round_trips == [[False], [True]]
    assert gateway.users == {"sid-carol": "carol"}
    round_trips.clear()
    admit_connection(gateway, AccessTokens(TEST_JWT_SECRET), accounts, make_jwt("carol"),
                     "sid-carol-2")
    assert round_trips == [[False]]  # cached by the first connect's second round trip


def test_with_redis_down_every_waiting_connect_fails_and_the_next_ones_are_tried_again(
        mysql_backend):
    gateway = gateway_on("redis://127.0.0.1:1/0")
    connects = [gevent.spawn(gateway.connected, f"sid{i}", "alice", f"jti{i}", time.time())
                for i in range(3)]
    gevent.get_hub().loop.update_now()  # see gateway_support.join_all
    assert len(gevent.joinall(connects, timeout=30)) == len(connects)
    for connect in connects:
        assert isinstance(connect.exception, RedisUnavailable)
    with pytest.raises(RedisUnavailable):
        gateway.connected("sid-later", "alice", "jti-later", time.time())
    assert gateway.users == {}
