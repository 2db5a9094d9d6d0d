"""Liveness on a real Redis: a beat makes a process live for its TTL, an expired or withdrawn
one is dead for everyone and forgotten among the members, and its last beat stays listed until
an operator forgets it; engines and web processes are kept apart."""

from __future__ import annotations

import socket

from engine import keys, liveness
from tests.conftest import wait_until


def test_a_beat_makes_the_process_live_with_what_it_reported(redis_db):
    client = redis_db.client
    liveness.beat(client, liveness.ENGINE, "engine-a", 30, {"pid": 12, "leases": 3})

    live = liveness.live(client, liveness.ENGINE)

    assert list(live) == ["engine-a"]
    assert live["engine-a"]["pid"] == 12 and live["engine-a"]["leases"] == 3
    assert live["engine-a"]["host"] == socket.gethostname()
    assert 0 < client.pttl(keys.engine_heartbeat("engine-a")) <= 30_000
    [record] = liveness.records(client, liveness.ENGINE)
    assert record.alive and record.name == "engine-a" and record.age is not None
    assert liveness.live(client, liveness.WEB) == {}  # kinds are kept apart
    assert liveness.records(client, liveness.WEB) == []


def test_a_process_whose_heartbeat_expired_is_dead_and_forgotten_among_the_members(redis_db):
    client = redis_db.client
    liveness.beat(client, liveness.WEB, "web-gone", 0.05, {"connections": 7})
    liveness.beat(client, liveness.WEB, "web-here", 30, {"connections": 2})

    wait_until(lambda: liveness.live_names(client, liveness.WEB) == ["web-here"], 5,
               what="the short heartbeat to expire")

    assert client.smembers(keys.WEB_INSTANCES) == {"web-here"}
    records = liveness.records(client, liveness.WEB)
    assert [(r.name, r.alive) for r in records] == [("web-here", True), ("web-gone", False)]
    assert records[1].info["connections"] == 7  # what it last said


def test_a_withdrawn_process_is_dead_at_once_and_its_last_beat_stays_listed(redis_db):
    client = redis_db.client
    liveness.beat(client, liveness.ENGINE, "engine-a", 30, {"pid": 1})

    liveness.withdraw(client, liveness.ENGINE, "engine-a")

    assert liveness.live(client, liveness.ENGINE) == {}
    assert client.smembers(keys.ENGINES) == set()
    assert [(r.name, r.alive) for r in liveness.records(client, liveness.ENGINE)] == [
        ("engine-a", False)]


def test_only_a_dead_process_can_be_forgotten(redis_db):
    client = redis_db.client
    liveness.beat(client, liveness.ENGINE, "alive", 30, {})
    liveness.beat(client, liveness.ENGINE, "dead", 30, {})
    liveness.withdraw(client, liveness.ENGINE, "dead")

    assert not liveness.forget(client, liveness.ENGINE, "alive")
    assert not liveness.forget(client, liveness.ENGINE, "unknown")
    assert not liveness.forget(client, liveness.WEB, "dead")  # not a web process
    assert liveness.forget(client, liveness.ENGINE, "dead")

    assert [r.name for r in liveness.records(client, liveness.ENGINE)] == ["alive"]
    assert not client.hexists(keys.ENGINE_STATS, "dead")


def test_instance_names_carry_the_host_and_pid_and_never_repeat():
    names = {liveness.instance_name() for _ in range(100)}

    assert len(names) == 100
    assert all(name.startswith(f"{socket.gethostname()}-") for name in names)
