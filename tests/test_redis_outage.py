"""Redis going away under a running web process: clients hear "unavailable" within a bounded
time, the process stays up, and it recovers by itself when Redis is back."""

from __future__ import annotations

import signal
import time

import requests

from engine import keys
from engine.db import create_db
from engine.schema import apply_schema
from tests.conftest import Backend, wait_until
from tests.gateway_support import connect, connected, msg_ids, refused

INGEST_TIMEOUT = 1.0
REDIS_TIMEOUT = 0.5
#: Generous: a correctness bound on how long a client waits, not a benchmark.
BOUND = INGEST_TIMEOUT + REDIS_TIMEOUT + 3.0


def sqlite_backend(name: str, redis_url: str, client, tmp_path,
                   version: tuple[int, ...] = (7, 0)) -> Backend:
    """A backend on a Redis of the test's own and a SQLite database in `tmp_path`."""
    url = f"sqlite:///{tmp_path / 'tributary.db'}"
    db = create_db(url)
    apply_schema(db)
    return Backend(name, redis_url, url, client, db, version)


def private_backend(private_redis, tmp_path) -> Backend:
    client = private_redis.client()
    version = tuple(int(p) for p in client.info("server")["redis_version"].split(".")[:2])
    return sqlite_backend("private", private_redis.url, client, tmp_path, version)


def health(web) -> int:
    return requests.get(f"{web.url}/readyz", timeout=10).status_code


def refused_in_time(client, msg_id: str) -> None:
    started = time.monotonic()
    ack = client.call({"msg_id": msg_id, "message": "x"}, timeout=BOUND + 5)
    assert time.monotonic() - started < BOUND, msg_id
    assert ack == {"ok": False, "error": "unavailable", "msg_id": msg_id}


def post_in_time(web, token: str) -> requests.Response:
    started = time.monotonic()
    answer = requests.post(f"{web.url}/api/messages", json=[{"message": "x"}], timeout=BOUND + 5,
                           headers={"Authorization": f"Bearer {token}"})
    assert time.monotonic() - started < BOUND
    return answer


def test_while_redis_is_down_messages_are_refused_in_bounded_time_and_then_accepted_again(
        private_redis, tmp_path, start_web):
    backend = private_backend(private_redis, tmp_path)
    # Refusals come back fast, so this client sends far above the default rate; the rate
    # limit is not what is under test.
    web = start_web(backend, INGEST_TIMEOUT=INGEST_TIMEOUT, REDIS_TIMEOUT=REDIS_TIMEOUT,
                    RATE_LIMIT=100_000, RATE_BURST=100_000)
    token = web.token("alice")
    with connected(web.url, token) as client:
        assert client.call({"msg_id": "before", "message": "x"})["ok"] is True

        # Hung: Redis accepts connections but answers nothing.
        private_redis.process.send_signal(signal.SIGSTOP)
        try:
            for n in range(5):
                refused_in_time(client, f"hung-{n}")
            assert post_in_time(web, token).status_code == 503
            assert health(web) == 503
        finally:
            # Gone: connections are refused (SIGKILL also ends a stopped process).
            private_redis.process.kill()
            private_redis.process.wait()

        # Keep sending across several retry attempts.
        down_since, sent = time.monotonic(), 0
        while time.monotonic() - down_since < 3.0 or sent < 20:
            refused_in_time(client, f"down-{sent}")
            sent += 1
        answer = post_in_time(web, token)
        assert answer.status_code == 503 and answer.json()["error"] == "unavailable"
        assert refused(web.url, token) == "unavailable"  # a new connection cannot be counted
        assert health(web) == 503
        assert web.process.alive()

        private_redis.start()  # same port, empty
        wait_until(lambda: client.call({"msg_id": "after", "message": "x"})["ok"], 15,
                   interval=0.2, what="a message accepted once Redis is back")
        assert health(web) == 200
        assert requests.post(f"{web.url}/api/messages", json=[{"message": "x"}], timeout=10,
                             headers={"Authorization": f"Bearer {token}"}).status_code == 202
        with connected(web.url, token) as newcomer:
            assert newcomer.call({"msg_id": "newcomer", "message": "x"})["ok"] is True
    assert msg_ids(backend.redis, "alice")[0] == "after"
    assert "newcomer" in msg_ids(backend.redis, "alice")

    log = web.process.log()
    assert log.count("Redis unavailable") == 1, log
    assert log.count("Redis available again") == 1, log
    assert "Traceback" not in log
    assert len(log.splitlines()) < sent, log  # once per outage, not once per message


def test_disconnects_during_an_outage_are_counted_once_redis_is_back(private_redis, tmp_path,
                                                                     start_web):
    backend = private_backend(private_redis, tmp_path)
    web = start_web(backend, INGEST_TIMEOUT=INGEST_TIMEOUT, REDIS_TIMEOUT=REDIS_TIMEOUT)
    alice_token, bob_token = web.token("alice"), web.token("bob")
    clients = [connect(web.url, alice_token), connect(web.url, alice_token),
               connect(web.url, bob_token)]
    assert backend.redis.hget(keys.connections("alice"), web_instance(backend)) == "2"

    backend.redis.shutdown(save=True)  # keeps the counts on disk for the restart
    private_redis.process.wait(10)
    for client in clients:
        client.close()
    wait_until(lambda: all(client.disconnected for client in clients), 5,
               what="the clients to be disconnected")
    private_redis.start()
    assert backend.redis.hlen(keys.connections("alice")) == 1  # as it was: nothing recorded

    def counted_out() -> bool:
        return all(backend.redis.hlen(keys.connections(user)) == 0 and
                   backend.redis.zscore(keys.closing_of(user), user) is not None
                   for user in ("alice", "bob"))

    wait_until(counted_out, 15, interval=0.2,
               what="the disconnects to be recorded once Redis is back")


def web_instance(backend: Backend) -> str:
    [instance] = backend.redis.smembers(keys.WEB_INSTANCES)
    return instance
