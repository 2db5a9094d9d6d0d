"""Per-address admission: a flood of new connections or requests from one address is cut to
its rate, answered so that a socket.io client retries by itself, while other addresses connect
and send as usual; behind a trusted proxy the forwarded address is what counts.

On loopback every 127.0.0.0/8 address is the machine's own: each test's flooder and its good
client connect from addresses of their own."""

from __future__ import annotations

import contextlib
import json
import time

import pytest
import requests

from tests.conftest import wait_until
from tests.hostile.support import (
    WebsocketSession,
    parse_response,
    raw_connection,
    read_until_closed,
    send_and_read,
)
from tests.test_js_client import node, run_client  # noqa: F401 (node is a fixture)
from webapp.admission import Admission, Bucket, address_key, forwarded_address

FLOODER, GOOD, OTHER = "127.0.0.2", "127.0.0.3", "127.0.0.4"
HEALTH = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def health_from(web, source: str, headers: str = "") -> tuple[int, dict[str, str], bytes]:
    """GET /healthz on a new connection from `source`, with `headers` (lines ending in CRLF)."""
    request = HEALTH[:-2] + headers.encode() + b"\r\n"
    raw, closed = send_and_read(web, request, source=source)
    assert closed, raw
    return parse_response(raw)


def assert_shed(status: int, headers: dict[str, str], body: bytes, expected: int,
                error: str) -> None:
    assert status == expected, body
    assert int(headers["retry-after"]) >= 1
    assert headers["connection"] == "close"
    assert json.loads(body) == {"error": error}


def test_a_connection_flood_from_one_address_is_cut_to_its_rate_while_another_sends(
        mysql_backend, start_web):
    web = start_web(mysql_backend, CONNECTION_RATE_PER_ADDRESS=1, CONNECTION_BURST_PER_ADDRESS=5,
                    REFUSED_CONNECTION_DELAY=0)
    token = web.token("alice")
    started = time.monotonic()
    answers = [health_from(web, FLOODER) for _ in range(30)]
    elapsed = time.monotonic() - started
    admitted = [a for a in answers if a[0] == 200]
    shed = [a for a in answers if a[0] != 200]
    # The burst, and what the rate refilled meanwhile: never the whole flood.
    assert 5 <= len(admitted) <= 5 + int(elapsed) + 1, (len(admitted), elapsed)
    for status, headers, body in shed:
        assert_shed(status, headers, body, 503, "too many new connections from this address")
    # Another address is not affected: it joins socket.io and its message is acknowledged.
    session = WebsocketSession(web.url, source=GOOD)
    try:
        assert session.join(token).startswith("40")
        session.send('421["data",{"msg_id":"m1","message":"hello"}]')
        ack = session.receive()
        assert ack is not None and ack.startswith("431[")
        assert json.loads(ack[3:])[0]["ok"] is True
    finally:
        session.close()
    metrics = requests.get(f"{web.url}/metrics", timeout=10).text
    assert f'tributary_admission_refused_total{{what="connections"}} {float(len(shed))}' \
        in metrics


def test_the_refused_connection_is_answered_before_the_request_is_read(
        mysql_backend, start_web):
    web = start_web(mysql_backend, CONNECTION_RATE_PER_ADDRESS=0.01,
                    CONNECTION_BURST_PER_ADDRESS=1)
    assert health_from(web, FLOODER)[0] == 200
    # The answer comes though the client has sent nothing at all.
    with raw_connection(web, source=FLOODER) as sock:
        raw, closed = read_until_closed(sock)
    assert closed
    assert_shed(*parse_response(raw), 503, "too many new connections from this address")


def test_a_refused_connection_waits_for_its_answer_while_other_addresses_are_served(
        mysql_backend, start_web):
    web = start_web(mysql_backend, CONNECTION_RATE_PER_ADDRESS=0.01,
                    CONNECTION_BURST_PER_ADDRESS=1, REFUSED_CONNECTION_DELAY=2)
    assert health_from(web, FLOODER)[0] == 200
    with raw_connection(web, source=FLOODER) as refused:
        refused_at = time.monotonic()
        refused.sendall(HEALTH)
        # Held: nothing comes back for now, and another address is served meanwhile.
        assert read_until_closed(refused, timeout=0.5) == (b"", False)
        assert health_from(web, GOOD)[0] == 200
        raw, closed = read_until_closed(refused)
        answered_after = time.monotonic() - refused_at
    assert closed
    assert_shed(*parse_response(raw), 503, "too many new connections from this address")
    assert answered_after >= 2 - 0.05, answered_after  # not before its delay


def test_past_max_held_refused_connections_are_answered_at_once_and_closing_answers_all(
        monkeypatch):
    import gevent
    from gevent import socket as gsocket

    from webapp import admission as module

    monkeypatch.setattr(module, "MAX_HELD", 2)
    server = module.server(("127.0.0.1", 0), lambda environ, start: [],
                           Admission(Bucket(0.001, 1), Bucket(0, 0), refusal_delay=60))
    server.start()
    sockets = []
    try:
        def connect():
            sockets.append(gsocket.create_connection(("127.0.0.1", server.server_port),
                                                     source_address=(FLOODER, 0)))
            return sockets[-1]

        def answer(sock, timeout):
            with gevent.Timeout(timeout, False):
                return sock.recv(65536)
            return None

        connect()  # the burst's one connection, admitted
        held = [connect(), connect()]
        past_cap = connect()
        assert answer(past_cap, 5).startswith(b"HTTP/1.1 503 ")  # the third refused: at once
        assert [answer(sock, 0.3) for sock in held] == [None, None]  # still waiting
        assert len(server._held) == 2
        server.close()  # a stopping server answers those it holds
        assert all(answer(sock, 5).startswith(b"HTTP/1.1 503 ") for sock in held)
    finally:
        server.close()
        for sock in sockets:
            sock.close()


def test_the_socketio_client_retries_by_itself_and_gets_in_once_its_address_may(
        node, mysql_backend, start_web):  # noqa: F811 (the node fixture)
    # One new connection every 5 s: node starts well within that, and retries until then.
    web = start_web(mysql_backend, CONNECTION_RATE_PER_ADDRESS=0.2,
                    CONNECTION_BURST_PER_ADDRESS=2)
    token = web.token("alice")
    for _ in range(2):
        assert health_from(web, OTHER)[0] == 200
    result = run_client(node, url=web.url, token=token, transports=["websocket"], retry=True,
                        localAddress=OTHER, messages=[
                            {"payload": {"msg_id": "after-retry", "message": "hi"}, "ack": True}])
    assert result["connected"] is True, result
    assert result["retries"] >= 1, result  # it was refused first, and retried by itself
    assert "connect_error" not in result, result  # never a socket.io refusal
    assert result["acks"][0]["ok"] is True


def test_requests_on_a_keep_alive_connection_are_cut_to_their_rate(mysql_backend, start_web):
    web = start_web(mysql_backend, REQUEST_RATE_PER_ADDRESS=1, REQUEST_BURST_PER_ADDRESS=3)
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with raw_connection(web, source=FLOODER) as sock:
        sock.sendall(request * 6)  # one connection, pipelined requests
        raw, closed = read_until_closed(sock)
    assert closed  # the connection ends at the refusal: going on costs a new one
    answers = raw.split(b"HTTP/1.1 ")[1:]
    assert [a[:3] for a in answers[:3]] == [b"200"] * 3
    status, headers, body = parse_response(b"HTTP/1.1 " + answers[-1])
    assert_shed(status, headers, body, 429, "too many requests from this address")
    assert health_from(web, GOOD)[0] == 200


def test_behind_a_trusted_proxy_the_forwarded_address_is_what_counts(mysql_backend, start_web):
    web = start_web(mysql_backend, TRUSTED_PROXY_HOPS=1, CONNECTION_RATE_PER_ADDRESS=0.01,
                    CONNECTION_BURST_PER_ADDRESS=2)
    flooder = "X-Forwarded-For: 203.0.113.9\r\n"
    # Every connection comes from the proxy (one peer address); only the forwarded one counts.
    assert [health_from(web, FLOODER, flooder)[0] for _ in range(2)] == [200, 200]
    assert_shed(*health_from(web, FLOODER, flooder), 503,
                "too many new connections from this address")
    assert health_from(web, FLOODER, "X-Forwarded-For: 198.51.100.7\r\n")[0] == 200
    # A client naming itself in front of the proxy's entry is not believed.
    assert_shed(*health_from(web, FLOODER, "X-Forwarded-For: 198.51.100.8, 203.0.113.9\r\n"),
                503, "too many new connections from this address")


def test_connections_ending_in_an_offence_cost_their_address_more(mysql_backend, start_web):
    web = start_web(mysql_backend, CONNECTION_RATE_PER_ADDRESS=0.01,
                    CONNECTION_BURST_PER_ADDRESS=15)
    session = WebsocketSession(web.url, source=FLOODER)
    session.send("42[]")  # an event before joining socket.io: the connection is ended
    assert session.closed_by_server()
    # 15 - 1 - OFFENCE_COST (10) = 4 new connections are left, not 14.
    statuses = [health_from(web, FLOODER)[0] for _ in range(6)]
    assert statuses == [200] * 4 + [503] * 2
    assert health_from(web, GOOD)[0] == 200


def test_a_long_polling_body_larger_than_the_allowance_could_hold_is_not_decoded(
        mysql_backend, start_web):
    from tests.hostile.support import PollingSession, wait_for_line

    web = start_web(mysql_backend, RATE_LIMIT=1, RATE_BURST=2)
    token = web.token("mallory")
    session = PollingSession(web.url)
    try:
        assert session.join(token).startswith("40")
        # Within the allowance (2 items): read and answered, the session goes on.
        answer = session.post('421["data",[{"msg_id":"a","message":"x"},'
                              '{"msg_id":"b","message":"x"}]]')
        assert answer.status_code == 200
        # 100 KB with no allowance left: refused unread, and the session ends.
        batch = json.dumps([{"msg_id": f"m-{n}"} for n in range(5000)])
        answer = session.post(f'422["data",{batch}]')
        assert answer.status_code == 400
        wait_for_line(web, "while over its rate")
        assert session.closed_by_server()
    finally:
        session.close()


# --- the table ------------------------------------------------------------------------------------

def test_the_table_of_addresses_stays_bounded_and_drops_the_least_recently_seen():
    admission = Admission(Bucket(1, 2), Bucket(1, 2), max_addresses=100)
    admission.take("10.0.0.1", "connections")
    admission.take("10.0.0.1", "connections")
    assert admission.take("10.0.0.1", "connections") > 0  # empty
    for n in range(1, 100):  # 10.0.0.1 stays among the 100 most recently seen
        admission.take(f"10.1.{n // 256}.{n % 256}", "connections")
    assert admission.take("10.0.0.1", "connections") > 0
    for n in range(100, 100_000):  # a flood of addresses
        admission.take(f"10.{n // 65536 + 2}.{n // 256 % 256}.{n % 256}", "connections")
        assert len(admission) <= 100
    assert admission.take("10.0.0.1", "connections") == 0  # forgotten: a full bucket again


def test_an_ipv6_client_counts_by_its_64_and_an_ipv4_mapped_one_as_ipv4():
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::2") \
        == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("192.0.2.7") == "192.0.2.7"


@pytest.mark.parametrize(("header", "hops", "expected"), [
    ("203.0.113.9", 1, "203.0.113.9"),
    ("198.51.100.8, 203.0.113.9", 1, "203.0.113.9"),
    ("198.51.100.8, 203.0.113.9", 2, "198.51.100.8"),
    ("203.0.113.9", 2, None),
    (None, 1, None),
])
def test_the_forwarded_address_is_read_as_proxyfix_reads_it(header, hops, expected):
    assert forwarded_address(header, hops) == expected


def test_a_disabled_limit_admits_everything():
    admission = Admission(Bucket(0, 1), Bucket(0, 1))
    assert all(admission.take("10.0.0.1", what) == 0
               for what in ("connections", "requests") for _ in range(100))
    assert not admission.at_accept


def test_the_web_process_still_serves_once_a_flood_stops(mysql_backend, start_web):
    web = start_web(mysql_backend, CONNECTION_RATE_PER_ADDRESS=5, CONNECTION_BURST_PER_ADDRESS=2,
                    REFUSED_CONNECTION_DELAY=0)
    for _ in range(10):
        with contextlib.suppress(OSError):
            health_from(web, FLOODER)
    wait_until(lambda: health_from(web, FLOODER)[0] == 200, 10, what="the bucket to refill")


# --- login floods ---------------------------------------------------------------------------------

def login_from(web, source: str, password: str) -> tuple[int, dict[str, str], bytes]:
    """POST /api/auth/login for alice on a new connection from `source`."""
    body = json.dumps({"username": "alice", "password": password}).encode()
    request = (b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body)) + body
    raw, closed = send_and_read(web, request, source=source)
    status, headers, answer = parse_response(raw)
    if status == 429:  # a throttled attempt ends its connection
        assert closed and headers["connection"] == "close"
    return status, headers, answer


def test_a_throttled_login_flood_costs_its_address_new_connections_and_no_redis(
        mysql_backend, start_web):
    from engine import keys

    web = start_web(mysql_backend, LOGIN_ADDRESS_LIMIT=2, LOGIN_ADDRESS_WINDOW=3600,
                    CONNECTION_RATE_PER_ADDRESS=0.01, CONNECTION_BURST_PER_ADDRESS=24)
    web.token("alice")
    assert [login_from(web, FLOODER, "wrong")[0] for _ in range(3)] == [401, 401, 429]
    # The empty bucket is remembered: with Redis's copy gone, the next attempt is still refused.
    mysql_backend.redis.delete(keys.login_address_bucket(FLOODER))
    assert login_from(web, FLOODER, "wrong")[0] == 429
    # 24 - 4 connections - 2 offences of 10 = 0: the next connection is refused at once.
    assert_shed(*login_from(web, FLOODER, "wrong"), 503,
                "too many new connections from this address")
    # Another address logs in.
    assert login_from(web, GOOD, "password-for-tests")[0] == 200


def test_a_user_sending_more_than_a_burst_beyond_its_allowance_is_flooding_for_a_refill():
    from engine.streams import Limits
    from webapp.ingest import Allowance

    allowance = Allowance()
    limits = Limits("socket", rate=1.0, burst=4, max_backlog=100)
    assert allowance.take("alice", limits, 8) == 4  # 4 beyond: answered, not flooding
    assert not allowance.flooding("alice", limits)
    assert allowance.take("mallory", limits, 5000) == 4  # 4,996 beyond
    assert allowance.flooding("mallory", limits)
    assert not allowance.flooding("alice", limits)
