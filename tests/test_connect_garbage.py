"""A connection leaves no cyclic garbage: what a connect and a disconnect allocate is freed by
reference counting as soon as the connection is gone, so a reconnect storm of thousands of
clients does not feed the collector the hundreds of thousands of objects whose full
collections once paused the web process for a quarter to half a second
(docs/PERFORMANCE.md). The web process runs as tests/gc_web.py, which reports, on a signal,
what a full collection found unreachable since the previous one."""

from __future__ import annotations

import json
import signal

import pytest

from engine import keys
from tests.conftest import free_port, service_env, wait_until, web_when_ready
from tests.gateway_support import connected, refused

#: What tests/gc_web.py prints for each report (not imported: it patches the standard library).
REPORT = "garbage"


def garbage_report(web) -> tuple[int, dict[str, int]]:
    """Ask the web process for a full collection; (objects found unreachable, their
    commonest types)."""
    before = web.process.log().count(f"{REPORT} ")
    web.process.popen.send_signal(signal.SIGUSR1)
    wait_until(lambda: web.process.log().count(f"{REPORT} ") > before, 10,
               what="the garbage report")
    line = [line for line in web.process.log().splitlines() if line.startswith(f"{REPORT} ")][-1]
    _, found, kinds = line.split(" ", 2)
    return int(found), json.loads(kinds)


def connect_and_leave(web, token: str, user: str, times: int) -> None:
    for _ in range(times):
        with connected(web.url, token) as client:
            assert client.call({"message": "hi"})["ok"] is True
    # Disconnects are recorded in Redis after the server handled them.
    wait_until(lambda: web.backend.redis.hlen(keys.connections(user)) == 0, 10,
               what="every disconnect to be handled")


@pytest.fixture
def gc_web(mysql_backend, processes):
    port = free_port()
    process = processes.start("web", ["-m", "tests.gc_web"],
                              service_env(mysql_backend, HOST="127.0.0.1", PORT=port,
                                          LOG_LEVEL="WARNING"))
    return web_when_ready(process, mysql_backend, port)


def test_connecting_and_disconnecting_leaves_no_cyclic_garbage(gc_web):
    token = gc_web.token("alice")
    connect_and_leave(gc_web, token, "alice", 5)  # lazily started greenlets, caches, pools
    garbage_report(gc_web)

    connect_and_leave(gc_web, token, "alice", 10)
    few, _ = garbage_report(gc_web)
    connect_and_leave(gc_web, token, "alice", 40)
    many, kinds = garbage_report(gc_web)

    # Whatever the process made meanwhile (a heartbeat, a sampler tick) is not per connection:
    # 30 more connections may not leave even one object more each.
    assert many - few < 30, kinds


def test_a_refused_connect_leaves_no_cyclic_garbage(gc_web):
    gc_web.token("bob")
    bad = gc_web.token("bob")[:-4] + "AAAA"  # a signature that does not check out
    for _ in range(3):
        assert refused(gc_web.url, bad) == "invalid token"
    garbage_report(gc_web)

    for _ in range(5):
        refused(gc_web.url, bad)
    few, _ = garbage_report(gc_web)
    for _ in range(20):
        refused(gc_web.url, bad)
    many, kinds = garbage_report(gc_web)

    assert many - few < 15, kinds
