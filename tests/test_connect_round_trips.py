"""Connects waiting together are authorized and recorded in one Redis round trip (the gateway's
connector), each with its own answer: opened and counted, refused for a revoked token and
counted out again, or failed with Redis down."""

from __future__ import annotations

import time

import gevent
import pytest

from engine import keys, streams
from engine.connections import connect_redis
from engine.errors import RedisUnavailable
from engine.settings import Settings
from tests.gateway_support import join_all
from webapp.gateway import Gateway
from webapp.users import User, account_record


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
                        lambda client, connects, instance: round_trips.append(len(connects))
                        or real(client, connects, instance))
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
