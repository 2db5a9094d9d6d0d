"""ACK_REPLICAS: a message is acknowledged only once that many replicas hold it.

A private master with one replica; the replica is frozen (SIGSTOP) to stand for one that has
fallen behind or is cut off. Without the setting, the master alone acknowledges."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from engine import keys
from engine.errors import ConfigError
from engine.settings import Settings
from tests.conftest import PrivateRedis, wait_until
from tests.gateway_support import connected, msg_ids
from tests.test_redis_outage import private_backend

ACK_REPLICAS_TIMEOUT = 0.3
#: A correctness bound on how long a client waits, not a benchmark.
BOUND = ACK_REPLICAS_TIMEOUT + 3.0


@pytest.fixture
def replica(private_redis: PrivateRedis, tmp_path: Path) -> Iterator[PrivateRedis]:
    (tmp_path / "replica").mkdir()
    server = PrivateRedis(tmp_path / "replica")
    server.start("--replicaof", "127.0.0.1", str(private_redis.port))
    client = server.client()
    wait_until(lambda: client.info("replication").get("master_link_status") == "up", 15,
               what="the replica to be in sync")
    yield server
    if server.process is not None:
        server.process.send_signal(signal.SIGCONT)
    server.stop()


def send(client, msg_id: str) -> dict:
    started = time.monotonic()
    ack = client.call({"msg_id": msg_id, "message": "x"}, timeout=BOUND + 5)
    assert time.monotonic() - started < BOUND, msg_id
    return ack


def test_a_message_the_replicas_do_not_confirm_is_answered_unavailable_and_then_accepted(
        private_redis, replica, tmp_path, start_web):
    backend = private_backend(private_redis, tmp_path)
    web = start_web(backend, ACK_REPLICAS=1, ACK_REPLICAS_TIMEOUT=ACK_REPLICAS_TIMEOUT)
    token = web.token("alice")
    with connected(web.url, token) as client:
        first = send(client, "first")
        assert first["ok"] is True
        # Acknowledged means the replica has it already.
        assert "first" in msg_ids(replica.client(), "alice")

        replica.process.send_signal(signal.SIGSTOP)
        try:
            assert send(client, "frozen") == {"ok": False, "error": "unavailable",
                                              "msg_id": "frozen"}
            answer = requests.post(f"{web.url}/api/messages", json=[{"message": "x"}],
                                   headers={"Authorization": f"Bearer {token}"}, timeout=BOUND)
            assert answer.status_code == 503, answer.text
        finally:
            replica.process.send_signal(signal.SIGCONT)

        # The client retries with the same msg_id once the replica is back.
        wait_until(lambda: send(client, "frozen")["ok"] is True, 15,
                   what="the replica to confirm again")
        assert "frozen" in msg_ids(replica.client(), "alice")


def test_by_default_the_master_alone_acknowledges(private_redis, replica, tmp_path, start_web):
    backend = private_backend(private_redis, tmp_path)
    web = start_web(backend)
    with connected(web.url, web.token("alice")) as client:
        replica.process.send_signal(signal.SIGSTOP)
        try:
            assert send(client, "one")["ok"] is True
        finally:
            replica.process.send_signal(signal.SIGCONT)
    assert private_redis.client().xlen(keys.stream("alice")) == 1


def test_with_no_replica_at_all_nothing_is_acknowledged(private_redis, tmp_path, start_web):
    backend = private_backend(private_redis, tmp_path)
    web = start_web(backend, ACK_REPLICAS=1, ACK_REPLICAS_TIMEOUT=ACK_REPLICAS_TIMEOUT)
    with connected(web.url, web.token("alice")) as client:
        assert send(client, "alone")["error"] == "unavailable"
    assert "replicas" in web.process.log()


def test_the_wait_must_end_before_the_redis_timeout_cuts_it_off():
    with pytest.raises(ConfigError, match="ACK_REPLICAS_TIMEOUT"):
        Settings.load({"ACK_REPLICAS": "1", "ACK_REPLICAS_TIMEOUT": "2", "REDIS_TIMEOUT": "2"},
                      env_file=None)
    assert Settings.load({"ACK_REPLICAS": "1"}, env_file=None).ACK_REPLICAS == 1
