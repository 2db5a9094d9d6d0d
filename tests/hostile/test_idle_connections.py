"""Connections that never get anywhere are not held: an engine.io session that never joins
socket.io is closed after CONNECT_TIMEOUT, and an HTTP client that sends its request line and
headers (or its body) too slowly is cut off after HTTP_HEADER_TIMEOUT (HTTP_BODY_TIMEOUT)."""

from __future__ import annotations

import gc
import time
import weakref

import gevent
import pytest

from engine import keys
from tests.gateway_support import connected
from tests.hostile.support import (
    assert_no_errors_logged,
    json_error,
    open_session,
    raw_connection,
    read_until_closed,
    trickle,
    wait_for_line,
)
from tests.test_redis_outage import private_backend
from webapp.offenders import DEADLINE_SPREAD
from webapp.realtime.engineio_session import ACTIONS_PER_TURN, Schedule

TIMEOUTS = {"CONNECT_TIMEOUT": 1, "HTTP_HEADER_TIMEOUT": 1, "HTTP_BODY_TIMEOUT": 1}


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_a_session_that_never_joins_is_closed_and_one_that_joined_is_not(
        mysql_backend, start_web, transport):
    web = start_web(mysql_backend, **TIMEOUTS)
    with connected(web.url, web.token("alice"), transports=(transport,)) as alice:
        silent = open_session(web.url, transport)
        refused = open_session(web.url, transport)
        try:
            assert refused.join("not a token").startswith("44")  # CONNECT_ERROR, still open
            assert silent.closed_by_server(timeout=10)
            assert refused.closed_by_server(timeout=10)
        finally:
            silent.close()
            refused.close()
        # alice joined before the same deadline, and is still there.
        assert alice.sio.connected
        assert alice.call({"msg_id": "m", "message": "still here"})["ok"] is True
        assert mysql_backend.redis.hlen(keys.connections("alice")) == 1
    lines = wait_for_line(web, "did not join", 2)
    assert all("unauthenticated" in line for line in lines), lines
    assert_no_errors_logged(web)


def test_a_session_whose_connect_is_being_answered_at_its_deadline_is_given_more_time(
        private_redis, tmp_path, start_web):
    # In a reconnect storm a CONNECT can wait its turn for Redis past CONNECT_TIMEOUT; closing
    # that session would throw the work away, and its client would only come back.
    backend = private_backend(private_redis, tmp_path)
    timeout = 3
    web = start_web(backend, CONNECT_TIMEOUT=timeout, REDIS_TIMEOUT=20)
    token = web.token("alice")
    # Past the latest deadline the spread can draw, and well before the earliest second one.
    held = 1000 * (timeout * DEADLINE_SPREAD + 0.2)
    backend.redis.client_pause(int(held), all=False)  # writes wait: the connect's script too
    started = time.monotonic()
    with connected(web.url, token) as alice:
        assert time.monotonic() - started >= held / 1000 - 0.1  # answered after the deadline
        assert alice.call({"msg_id": "m", "message": "in"})["ok"] is True
    assert "did not join" not in web.process.log()
    assert_no_errors_logged(web)


def test_slowloris_headers_are_cut_off_with_a_408(mysql_backend, start_web):
    web = start_web(mysql_backend, **TIMEOUTS)
    with raw_connection(web) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        # Then a header a byte every 50 ms: 5 s for it, if nobody stops it.
        stopped = trickle(sock, b"X-Slow: " + b"a" * 100, interval=0.05, limit=4)
        answer, closed = read_until_closed(sock, timeout=5)
    assert stopped and closed, "the slow client was never cut off"
    status, body, headers = json_error(answer)
    assert status == 408 and "error" in body and headers["connection"] == "close"
    wait_for_line(web, "request line and headers")
    assert_no_errors_logged(web)


def test_a_connection_that_sends_nothing_is_closed(mysql_backend, start_web):
    web = start_web(mysql_backend, **TIMEOUTS)
    with raw_connection(web) as sock:
        answer, closed = read_until_closed(sock, timeout=5)
    assert closed and answer == b""
    assert_no_errors_logged(web)


@pytest.mark.parametrize("path", ["/api/messages",
                                  "/socket.io/?EIO=4&transport=polling&sid={sid}"])
def test_a_body_that_trickles_in_is_cut_off(mysql_backend, start_web, path):
    web = start_web(mysql_backend, **TIMEOUTS)
    sid = ""
    if "{sid}" in path:
        session = open_session(web.url, "polling")
        session.join(web.token("mallory"))
        sid = session.sid
    head = (f"POST {path.format(sid=sid)} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {web.token('mallory')}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n").encode()
    with raw_connection(web) as sock:
        sock.sendall(head)
        # A byte every 100 ms: 100 s for the whole body, if nobody stops it.
        stopped = trickle(sock, b" " * 1000, interval=0.1, limit=4)
        answer, closed = read_until_closed(sock, timeout=5)
    assert stopped and closed, "the slow body was never cut off"
    assert answer.startswith(b"HTTP/1.1 4"), answer[:100]
    wait_for_line(web, "request body")
    assert mysql_backend.redis.xlen(keys.stream("mallory")) == 0
    assert_no_errors_logged(web)


class Session:
    closing = closed = False


def run_until(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the schedule did not get there in time"
        gevent.sleep(0.01)


def test_deadlines_of_sessions_opened_together_are_spread_over_time():
    # 500 sessions an attacker opens at once must not all be closed in one turn of the event
    # loop, where every other client's acks would wait behind them.
    delay, fired = 0.2, []
    schedule = Schedule(delay, lambda session: fired.append((time.monotonic(), session)),
                        spread=True)
    sessions = [Session() for _ in range(50)]
    started = time.monotonic()
    for session in sessions:
        schedule.add(session)
    run_until(lambda: len(fired) == len(sessions), 10)
    waited = [at - started for at, _ in fired]
    assert min(waited) >= delay  # never before the deadline the setting promises
    assert max(waited) - min(waited) > 0.25 * delay * (DEADLINE_SPREAD - 1)
    assert {id(session) for _, session in fired} == {id(session) for session in sessions}


def test_sessions_due_together_share_turns_of_a_busy_event_loop():
    # A loaded web process carries many clients' messages in each turn of its event loop. A
    # schedule that took a turn per ping sent fewer pings a second than came due, until its
    # clients gave up waiting for them ("ping timeout") with the process still running.
    turns, fired, busy = [0], [], [True]

    def other_clients() -> None:
        while busy[0]:
            turns[0] += 1
            gevent.sleep(0)

    schedule = Schedule(0, lambda session: fired.append(turns[0]))
    sessions = [Session() for _ in range(ACTIONS_PER_TURN * 20)]
    loop = gevent.spawn(other_clients)
    try:
        for session in sessions:
            schedule.add(session)
        run_until(lambda: len(fired) == len(sessions), 10)
    finally:
        busy[0] = False
        loop.join()
    assert len(set(fired)) <= len(sessions) // ACTIONS_PER_TURN + 1
    assert len(set(fired)) > 1  # and they did yield in between


def test_a_sooner_deadline_added_later_wakes_the_schedule():
    fired = []
    schedule = Schedule(5, lambda session: fired.append(time.monotonic()))
    first, second = Session(), Session()  # the schedule holds weak references only
    schedule.add(first)
    schedule.delay = 0.1
    started = time.monotonic()
    schedule.add(second)
    run_until(lambda: fired, 3)
    assert fired[0] - started < 2  # not held behind the first one's 5 s


def test_a_session_waiting_for_its_deadline_is_not_kept_alive_by_it():
    # Thousands of connections opened and dropped a second (a malformed-packet flood) must not
    # be held, with their buffers, until their connect deadline or next ping is due.
    schedule = Schedule(60, lambda session: None)
    session = Session()
    alive = weakref.ref(session)
    schedule.add(session)
    del session
    gc.collect()
    assert alive() is None
