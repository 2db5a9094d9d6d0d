"""The database (or Redis) goes away for a while: the engine stays up, says so once when the
outage starts and once when it ends, loses nothing and drains everything afterwards."""

from __future__ import annotations

import contextlib
import socket
import threading

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import TEST_DATABASE_URL, Backend, free_port, wait_until
from tests.engine_support import (
    append_many,
    backlog_total,
    payload,
    pending_total,
    row_count,
    stats_mismatches,
    written_ids,
)
from tests.gateway_support import connected, refused

USERS = ["alice", "bob", "carol"]


class TcpProxy:
    """A TCP relay between the engine and MariaDB that the test can cut and restore.

    Cut, it closes every open connection and turns new ones away (accepted and closed at once,
    so the test can count the engine's attempts).
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.up = True
        self.refused = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.05)
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self.up:
                self.refused += 1
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(src)
            self._drop(dst)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def cut(self) -> None:
        self.up = False
        with self._lock:
            doomed = list(self._open)
        for sock in doomed:
            self._drop(sock)

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self._stopping.set()
        self.cut()
        self._thread.join(5)
        self._listener.close()


@pytest.fixture
def proxied(redis_db, mysql_db):
    """The production-shaped backend, with the engine reaching MariaDB through a TcpProxy."""
    url = make_url(TEST_DATABASE_URL)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 3306))
    through = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    yield Backend("mysql", redis_db.url, through, redis_db.client, mysql_db,
                  redis_db.version), proxy
    proxy.close()


def send(backend: Backend, tag: str, sent: list[tuple[str, str]]) -> None:
    batches = {user: [payload(f"{tag}-{n}", value=float(n)) for n in range(10)]
               for user in USERS}
    append_many(backend.redis, batches)
    sent.extend((user, item["msg_id"]) for user, items in batches.items() for item in items)


def test_the_engine_rides_out_a_database_outage_and_drains_everything_after(proxied,
                                                                           start_engine):
    backend, proxy = proxied
    engine = start_engine(backend, RETRY_MAX_DELAY=0.5, MAX_BATCH_AGE=0.2)
    sent: list[tuple[str, str]] = []
    send(backend, "before", sent)
    wait_until(lambda: row_count(backend.db) == 30, 10, what="the rows before the outage")

    proxy.cut()
    send(backend, "during", sent)
    wait_until(lambda: "database unavailable" in engine.log(), 10, what="the outage noticed")
    send(backend, "later", sent)
    wait_until(lambda: proxy.refused >= 3, 10, what="a few more attempts during the outage")
    assert row_count(backend.db) == 30
    assert engine.alive()

    proxy.restore()
    wait_until(lambda: row_count(backend.db) == 90, 15, what="the drain after the outage")
    wait_until(lambda: pending_total(backend.redis, USERS) == 0
               and backlog_total(backend.redis, USERS) == 0, 5, what="nothing left in Redis")

    assert sorted(written_ids(backend.db)) == sorted(sent)
    assert stats_mismatches(backend.db) == []
    log = engine.log()
    assert log.count("database unavailable") == 1, log
    assert "retrying with backoff up to 500ms" in log, log
    assert log.count("database available again") == 1, log
    assert "Traceback" not in log
    assert engine.alive()


def test_the_engine_rides_out_a_redis_restart_and_writes_what_comes_after(
        private_redis, mysql_db, start_engine):
    client = private_redis.client()
    backend = Backend("mysql", private_redis.url, TEST_DATABASE_URL, client, mysql_db, (7, 0))
    engine = start_engine(backend, RETRY_MAX_DELAY=0.5, MAX_BATCH_AGE=0.2)
    sent: list[tuple[str, str]] = []
    send(backend, "before", sent)
    wait_until(lambda: row_count(mysql_db) == 30, 10, what="the rows before the restart")

    private_redis.stop()
    wait_until(lambda: "Redis unavailable" in engine.log(), 10, what="the outage noticed")
    private_redis.start()  # empty, and without the engine's Lua scripts
    send(backend, "after", sent)

    wait_until(lambda: row_count(mysql_db) == 60, 15, what="the rows after the restart")
    assert sorted(written_ids(mysql_db)) == sorted(sent)
    assert stats_mismatches(mysql_db) == []
    log = engine.log()
    assert log.count("Redis unavailable") == 1, log
    assert log.count("Redis available again") == 1, log
    assert engine.alive()
    client.close()


def test_a_connect_that_needs_the_database_while_it_is_down_is_refused_unavailable(
        proxied, start_web):
    # An account not cached in Redis yet is looked up in the database at connect: while the
    # database is unreachable the client is told "unavailable" (it may retry), not left
    # without an answer, and the process logs no traceback.
    backend, proxy = proxied
    web = start_web(backend)
    token = web.token("dora")
    proxy.cut()
    try:
        assert refused(web.url, token) == "unavailable"
    finally:
        proxy.restore()
    with connected(web.url, token) as dora:
        assert dora.call({"msg_id": "m", "message": "after"})["ok"] is True
    assert "Traceback" not in web.process.log()
