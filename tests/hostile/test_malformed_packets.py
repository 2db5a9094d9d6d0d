"""A client sending what engine.io or socket.io cannot take, at any layer and on either
transport, is disconnected with one warning line: no traceback, nothing logged per packet, and
nobody else notices. Clients nobody authenticated cannot flood the log either."""

from __future__ import annotations

import re

import pytest

from engine import keys
from tests.conftest import wait_until
from tests.gateway_support import connected
from tests.hostile.support import (
    assert_no_errors_logged,
    joined_session,
    lines_with,
    open_session,
    wait_for_line,
)

ENGINEIO = "malformed engine.io packet"
SOCKETIO = "malformed socket.io packet"

#: What a broken or hostile client might send once joined, on both transports, and what the
#: warning line calls it.
MALFORMED = [
    # engine.io packets: not a packet at all, or one only a server sends
    ("x", ENGINEIO), ("0", ENGINEIO), ("2", ENGINEIO), ("6", ENGINEIO), ("9", ENGINEIO),
    # socket.io packets that do not decode, or that only a server sends
    ("42[invalid json", SOCKETIO), ("49", SOCKETIO), ('44{"message":"x"}', SOCKETIO),
    ("4" + "[" * 40, SOCKETIO),
    # EVENT packets of the wrong shape: an event is an array starting with its name
    ("42", SOCKETIO), ("42[]", SOCKETIO), ("42{}", SOCKETIO), ('42"data"', SOCKETIO),
    ("42[[[[[[[[[[[[[[[[[[[[", SOCKETIO),
    # binary attachments, which Tributary's events never have
    ('451-["data",{"_placeholder":true,"num":0}]', SOCKETIO),
]
#: Text frames only a websocket can carry, and payloads only long-polling can.
WEBSOCKET_ONLY = [("", ENGINEIO)]
POLLING_ONLY = [("4x\x1e", ENGINEIO), ("b!!!not base64", ENGINEIO), ("d=", ENGINEIO),
                ("\x1e\x1e", ENGINEIO)]


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_a_malformed_packet_is_one_warning_line_and_closes_only_that_connection(
        mysql_backend, start_web, transport):
    web = start_web(mysql_backend)
    redis = mysql_backend.redis
    cases = MALFORMED + (WEBSOCKET_ONLY if transport == "websocket" else POLLING_ONLY)
    with connected(web.url, web.token("alice")) as alice:
        for number, (text, warning) in enumerate(cases):
            with joined_session(web, transport, "mallory") as mallory:
                wait_until(lambda: redis.hlen(keys.connections("mallory")) == 1, 5,
                           what="mallory's connection to be counted")
                if transport == "websocket":
                    mallory.send(text)
                else:
                    mallory.post(text)  # answered 400 (the session is over), or OK
                assert mallory.closed_by_server(), f"still open after {text!r}"
            wait_until(lambda: redis.hlen(keys.connections("mallory")) == 0, 5,
                       what=f"mallory's connection to be counted out after {text!r}")
            expected = [w for _, w in cases[:number + 1]].count(warning)
            wait_for_line(web, warning, expected, timeout=5)
            ack = alice.call({"msg_id": f"m-{number}", "message": "still here"})
            assert ack["ok"] is True, ack

    log = web.process.log()
    assert "from user mallory" in log and "'2[invalid json'" in log
    warnings = [line for line in log.splitlines() if "malformed" in line]
    assert len(warnings) == len(cases), warnings
    assert all(" WARNING " in line for line in warnings), warnings
    assert_no_errors_logged(web)
    assert web.process.alive()


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_an_event_before_joining_the_namespace_disconnects(mysql_backend, start_web,
                                                          transport):
    web = start_web(mysql_backend)
    session = open_session(web.url, transport)
    try:
        session.send('42["data",{"msg_id":"m","message":"x"}]')
        assert session.closed_by_server()
    finally:
        session.close()
    line = wait_for_line(web, SOCKETIO)[0]
    assert "not joined" in line and "unauthenticated" in line, line
    assert mysql_backend.redis.exists(keys.stream("mallory")) == 0
    assert_no_errors_logged(web)


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_a_flood_of_malformed_packets_is_one_warning_line(mysql_backend, start_web, transport):
    web = start_web(mysql_backend)
    with joined_session(web, transport, "mallory") as mallory:
        mallory.send_all(["42[]"] * 500)  # 2.5 KB: one burst, or one polling request
        assert mallory.closed_by_server()
    wait_until(lambda: mysql_backend.redis.hlen(keys.connections("mallory")) == 0, 5,
               what="mallory's connection to be counted out")
    assert len(wait_for_line(web, SOCKETIO)) == 1
    assert_no_errors_logged(web)
    assert len(web.process.log().splitlines()) < 20  # start-up lines and that one warning


def test_unauthenticated_floods_are_logged_at_a_bounded_rate(mysql_backend, start_web):
    web = start_web(mysql_backend)
    offenders = 40
    for _ in range(offenders):
        session = open_session(web.url, "websocket")
        try:
            session.send("x")
            assert session.closed_by_server()
        finally:
            session.close()
    # A few lines at once, then one line saying how many more there were.
    summary = wait_for_line(web, "not logged one by one", timeout=20)[0]
    individual = lines_with(web, ENGINEIO)
    assert 1 <= len(individual) <= 5, individual
    suppressed = int(re.search(r"(\d+) more", summary).group(1))
    assert len(individual) + suppressed == offenders, (individual, summary)
    assert_no_errors_logged(web)
