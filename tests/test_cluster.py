"""Tributary on Redis Cluster (3 masters, 3 replicas, made by the tests): REDIS_URL parsing,
the per-user state that must work unchanged there, and whole runs with several web processes
and engines, through engine crashes and the loss of a master."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from engine import keys, liveness, recovery, scripts, streams
from engine.connections import connect_redis, parse_cluster_url
from engine.errors import ConfigError
from engine.schema import users as users_table
from engine.settings import Settings
from tests.cluster_support import TestCluster
from tests.conftest import Backend, make_jwt, service_env, wait_until
from tests.engine_support import backlog_total, order_violations, pending_total, written_ids
from tests.gateway_support import Client, connect, refused

#: Settings that make engines take over quickly from one that was killed.
FAST_TAKEOVER = {"SWEEP_INTERVAL": 0.2, "MAX_BATCH_AGE": 0.5, "LEASE_TTL": 2,
                 "CLAIM_IDLE_MS": 1000}


# --- the URL --------------------------------------------------------------------------------------

def test_a_cluster_url_names_its_nodes_credentials_and_tls():
    parsed = parse_cluster_url("rediss+cluster://app:s%40cret@10.0.0.1:7000,[::1]:7001/")
    assert [(n.host, n.port) for n in parsed["startup_nodes"]] == [("10.0.0.1", 7000),
                                                                    ("::1", 7001)]
    assert (parsed["username"], parsed["password"], parsed["ssl"]) == ("app", "s@cret", True)
    assert parse_cluster_url("redis+cluster://h:1")["ssl"] is False


@pytest.mark.parametrize("url, problem", [
    ("redis+cluster://127.0.0.1:7000/0", "no database numbers"),
    ("redis+cluster://127.0.0.1/", "is not host:port"),
    ("redis+cluster://127.0.0.1:7000,:7001/", "is not host:port"),
    ("redis+cluster://127.0.0.1:99999/", "is not host:port"),
    ("redis+cluster://127.0.0.1:7000/?ssl=true", "takes no options"),
])
def test_a_bad_cluster_url_is_refused_with_the_reason(url, problem):
    settings = Settings.load({"REDIS_URL": url, "TRIBUTARY_ENV": "development"}, env_file=None)
    with pytest.raises(ConfigError, match=problem):
        connect_redis(settings)


# --- per-user state on the cluster ----------------------------------------------------------------

def test_the_registry_and_closing_set_spread_over_the_masters(cluster_backend):
    client = cluster_backend.redis
    users = [f"u{n}" for n in range(200)]
    streams.register(client, users)
    streams.mark_closing(client, dict.fromkeys(users[:50], 1))
    assert streams.registered_users(client) == sorted(users)
    assert streams.registry_size(client) == 200
    assert sorted(streams.closing_users(client)) == sorted(users[:50])
    nodes = {client.get_node_from_key(keys.queues(s)).name for s in range(keys.REGISTRY_SHARDS)}
    assert len(nodes) == 3  # no one master holds every user
    biggest = max(int(client.scard(keys.queues(s))) for s in range(keys.REGISTRY_SHARDS))
    assert biggest < 50
    streams.unmark_closing(client, users[:50])
    assert streams.closing_users(client) == []


def test_reconciliation_finds_unregistered_streams_on_every_master(cluster_backend):
    client = cluster_backend.redis
    users = [f"stray{n}" for n in range(30)]
    for user in users:  # streams made without registering them, as after a crash
        client.xgroup_create(keys.stream(user), keys.GROUP, id="0", mkstream=True)
    masters = {client.get_node_from_key(keys.stream(user)).name for user in users}
    assert len(masters) == 3
    assert recovery.reconcile_registry(client, streams.registered_users(client)) == sorted(users)
    assert streams.registered_users(client) == sorted(users)


def test_leases_heartbeats_and_rate_buckets_work_on_the_cluster(cluster_backend):
    client = cluster_backend.redis
    users = [f"lease{n}" for n in range(30)]
    assert streams.take_leases(client, users, "engine-a", 5000) == users
    assert streams.take_leases(client, users, "engine-b", 5000) == []
    streams.release_leases(client, users[:10], "engine-a")
    assert streams.take_leases(client, users, "engine-b", 5000) == users[:10]

    liveness.beat(client, liveness.ENGINE, "engine-a", 5, {"pid": 1})
    liveness.beat(client, liveness.ENGINE, "engine-b", 5, {"pid": 2})
    client.delete(keys.engine_heartbeat("engine-b"))
    assert list(liveness.live(client, liveness.ENGINE)) == ["engine-a"]

    pipe = client.pipeline(transaction=False)
    limits = streams.Limits("socket", rate=1, burst=3, max_backlog=100)
    for user in users[:5]:
        streams.queue_appends(pipe, [(user, limits, [b"1", b"2", b"3", b"4"])],
                              streams.now_ms())
    for [reply] in scripts.execute_scripts(client, pipe):
        _, statuses = streams.parse_append(reply)
        assert statuses[3] == streams.RATE_LIMITED and all("-" in s for s in statuses[:3])


def test_a_token_revoked_on_one_web_process_ends_its_session_on_the_other(cluster_backend,
                                                                         start_web):
    """The denylist key and the revocation announcement (pub/sub) work across the cluster."""
    first, second = start_web(cluster_backend), start_web(cluster_backend)
    token = first.token("alice")
    client = connect(second.url, token)
    try:
        out = requests.post(f"{first.url}/api/auth/logout", timeout=10,
                            headers={"Authorization": f"Bearer {token}"})
        assert (out.status_code, out.json()) == (200, {"revoked": 1})
        wait_until(lambda: client.received("session_ended") and client.disconnected, 10,
                   what="the session on the other web process to end")
        assert client.received("session_ended") == [{"reason": "token revoked"}]
        assert refused(second.url, token) == "token revoked"
    finally:
        client.close()


# --- whole runs -----------------------------------------------------------------------------------

@dataclass
class Sender:
    """One user's socket.io client sending a message a second, remembering every ack."""

    user: str
    client: Client
    acked: list[tuple[str, str]] = field(default_factory=list)  # (msg_id, entry id)
    refused: int = 0
    sent: int = 0

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            msg_id = f"{self.user}-{self.sent}"
            self.sent += 1
            try:
                ack = self.client.call({"msg_id": msg_id, "message": "m", "timestamp":
                                        "2026-12-03T08:00:00.000Z"}, timeout=10)
            except Exception:  # a timed-out ack: not acknowledged, not counted
                self.refused += 1
            else:
                if ack.get("ok"):
                    self.acked.append((msg_id, ack["id"]))
                else:
                    self.refused += 1
            stop.wait(1.0)  # about one message a second, like a real client

    def receipted(self) -> set[str]:
        return {msg_id for receipt in self.client.received("committed")
                for msg_id in receipt["msg_ids"]}


def add_users(db: sa.engine.Engine, names: list[str]) -> None:
    """Accounts for the token checks, inserted at once (no password hashing per user)."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with db.begin() as conn:
        conn.execute(users_table.insert(), [
            {"username": name, "password_hash": "unused", "role": "user", "disabled": False,
             "created_at": now} for name in names])


@pytest.fixture
def senders(request: pytest.FixtureRequest) -> Iterator[list[Sender]]:
    started: list[Sender] = []
    yield started
    for sender in started:
        sender.client.close()


def start_senders(backend: Backend, webs: list[Any], count: int,
                  senders: list[Sender]) -> tuple[threading.Event, list[threading.Thread]]:
    names = [f"user{n:03d}" for n in range(count)]
    add_users(backend.db, names)
    with ThreadPoolExecutor(8) as pool:  # alternately on each web process
        clients = pool.map(lambda i: connect(webs[i % len(webs)].url, make_jwt(names[i])),
                           range(count))
        senders.extend(Sender(name, client) for name, client in zip(names, clients))
    stop = threading.Event()
    threads = [threading.Thread(target=s.run, args=(stop,), daemon=True) for s in senders]
    for thread in threads:
        thread.start()
    return stop, threads


def finish(backend: Backend, senders: list[Sender], stop: threading.Event,
           threads: list[threading.Thread]) -> tuple[set[tuple[str, str]], list[tuple[str, str]]]:
    """Stop sending; wait until everything acked was written or Redis holds nothing more.
    Returns (acked, written)."""
    stop.set()
    for thread in threads:
        thread.join(15)
    acked = {(s.user, msg_id) for s in senders for msg_id, _ in s.acked}
    names = [s.user for s in senders]
    wait_until(lambda: backlog_total(backend.redis, names) == 0
               and pending_total(backend.redis, names) == 0, 60,
               what="every stream drained and nothing pending")
    return acked, written_ids(backend.db)


def per_user_order_kept(senders: list[Sender], written: list[tuple[str, str]],
                        db: sa.engine.Engine) -> None:
    assert order_violations(db) == []
    position = {pair: index for index, pair in enumerate(written)}
    for sender in senders:
        rows = [msg_id for msg_id, _ in sender.acked if (sender.user, msg_id) in position]
        assert rows == sorted(rows, key=lambda m: position[(sender.user, m)]), sender.user


@pytest.mark.slow
def test_two_web_processes_and_three_engines_share_a_cluster_through_engine_kills(
        cluster_backend, start_web, start_engine, senders):
    backend = cluster_backend
    webs = [start_web(backend), start_web(backend)]
    engines = [start_engine(backend, wait=False, **FAST_TAKEOVER) for _ in range(3)]
    stop, threads = start_senders(backend, webs, 100, senders)
    wait_until(lambda: all("started:" in e.log() for e in engines), 30, what="engines started")
    started = time.monotonic()
    for round_ in range(2):  # an engine killed -9 twice, a fresh one started in its place
        wait_until(lambda round_=round_: time.monotonic() - started > 10 * (round_ + 1), 40,
                   interval=0.2, what=f"round {round_}")
        victim = engines.pop(0)
        victim.kill()
        assert victim.popen.returncode == -9
        engines.append(start_engine(backend, **FAST_TAKEOVER))
    wait_until(lambda: time.monotonic() - started >= 30, 30, interval=0.2, what="30 s of load")
    acked, written = finish(backend, senders, stop, threads)

    assert len(acked) >= 100 * 20
    assert len(written) == len(set(written))  # nothing twice
    assert set(written) == acked  # every acked message, and nothing else
    per_user_order_kept(senders, written, backend.db)
    # Receipts came from the engines through the cluster's pub/sub to both web processes.
    for sender in senders:
        wait_until(lambda s=sender: {m for m, _ in s.acked} <= s.receipted(), 15,
                   what=f"{sender.user}'s receipts")
    assert all(web.process.alive() for web in webs)
    assert all(engine.alive() for engine in engines)


@pytest.mark.slow
def test_a_master_killed_mid_run_is_replaced_and_everyone_goes_on(
        tmp_path: Path, mysql_db, start_web, start_engine, senders):
    cluster = TestCluster(tmp_path / "cluster")
    cluster.start()
    client = cluster.client()
    try:
        backend = Backend("cluster", cluster.url, _database_url(), client, mysql_db, (7, 0))
        webs = [start_web(backend), start_web(backend)]
        engines = [start_engine(backend, **FAST_TAKEOVER) for _ in range(2)]
        stop, threads = start_senders(backend, webs, 30, senders)
        wait_until(lambda: sum(len(s.acked) for s in senders) >= 90, 30,
                   what="messages flowing")
        # The master of the socket.io channel's slot: the web processes' subscriptions are on it,
        # so receipts stop reaching clients until the web processes subscribe again.
        channel = service_env(backend)["SOCKETIO_CHANNEL"]
        victim = client.get_node_from_key(channel).port
        assert victim in cluster.master_ports()
        cluster.kill(victim)
        wait_until(lambda: victim not in cluster.master_ports() and cluster.healthy(), 30,
                   interval=0.1, what="a replica promoted in place of the dead master")
        after = {s.user: len(s.acked) for s in senders}
        # Every user, its master dead or not, gets messages acknowledged again.
        wait_until(lambda: all(len(s.acked) > after[s.user] + 1 for s in senders), 30,
                   what="every user acknowledged again after the failover")
        acked, written = finish(backend, senders, stop, threads)

        lost = acked - set(written)
        print(f"\nmaster on port {victim} killed: {len(acked)} messages acked, {len(lost)} "
              f"acked ones lost with it (ACK_REPLICAS=0), "
              f"{sum(s.refused for s in senders)} refused or unanswered meanwhile")
        assert len(written) == len(set(written))  # nothing twice
        assert set(written) <= acked
        assert len(lost) < len(acked) // 10  # at most what the dead master had not replicated
        per_user_order_kept(senders, written, mysql_db)
        # Receipts flow again: the web processes subscribed to the promoted replica by themselves.
        for sender in senders:
            last = sender.acked[-1][0]
            wait_until(lambda s=sender, last=last: last in s.receipted(), 15,
                       what=f"the receipt of {sender.user}'s last message")
        assert all(web.process.alive() for web in webs)
        assert all(engine.alive() for engine in engines)
    finally:
        client.close()
        cluster.stop()


def _database_url() -> str:
    from tests.conftest import TEST_DATABASE_URL

    return TEST_DATABASE_URL
