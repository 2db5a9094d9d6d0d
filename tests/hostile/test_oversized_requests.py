"""Requests too large for the web process are refused before they are read, with a JSON answer
that says what was too large, and the connection closed: a header block over MAX_HEADER_BYTES
(431), a request line over 8 KiB (414), a body announced over MAX_FRAME_BYTES (413). Nothing is
logged as an error."""

from __future__ import annotations

import pytest
import requests

from tests.hostile.support import (
    assert_no_errors_logged,
    json_error,
    open_session,
    send_and_read,
    wait_for_line,
)

HUGE_TOKEN = "x" * 100_000


def request(head: str, body: bytes = b"") -> bytes:
    return head.replace("\n", "\r\n").encode() + b"\r\n" + body


#: A 100 KB token in a header, one over-long header, many small ones; and the same token in
#: the query string, where the request line is too long.
OVERSIZED = [
    (f"GET /api/auth/me HTTP/1.1\nHost: x\nAuthorization: Bearer {HUGE_TOKEN}\n", 431),
    (f"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\nHost: x\nCookie: {'c' * 20_000}\n",
     431),
    ("GET /healthz HTTP/1.1\nHost: x\n" + "".join(f"X-H{n}: {n}\n" for n in range(150)), 431),
    (f"GET /socket.io/?EIO=4&transport=polling&token={HUGE_TOKEN} HTTP/1.1\nHost: x\n", 414),
]


def test_an_oversized_header_or_request_line_gets_a_json_refusal(mysql_backend, start_web):
    web = start_web(mysql_backend)
    for head, status in OVERSIZED:
        answer, closed = send_and_read(web, request(head))
        assert closed, head[:60]
        got, body, headers = json_error(answer)
        assert got == status, (head[:60], got, body)
        assert "header" in body["error"] or "request line" in body["error"], body
        assert headers["connection"] == "close"
    wait_for_line(web, "refused", len(OVERSIZED))
    assert_no_errors_logged(web)
    assert requests.get(f"{web.url}/healthz", timeout=10).status_code == 200


def test_headers_under_the_limit_are_accepted(mysql_backend, start_web):
    web = start_web(mysql_backend)
    answer = requests.get(f"{web.url}/healthz", timeout=10, headers={"Cookie": "c" * 10_000})
    assert answer.status_code == 200


@pytest.mark.parametrize("target", ["/api/messages", "polling"])
def test_a_body_announced_over_the_limit_is_refused_before_it_is_read(mysql_backend, start_web,
                                                                      target):
    web = start_web(mysql_backend, MAX_FRAME_BYTES=20_000)
    path, session = target, None
    if target == "polling":
        session = open_session(web.url, "polling")
        session.join(web.token("mallory"))
        path = session.endpoint.removeprefix(web.url)
    head = (f"POST {path} HTTP/1.1\nHost: x\nAuthorization: Bearer {web.token('mallory')}\n"
            "Content-Type: text/plain\nContent-Length: 20001\n")
    # Only part of the body is sent: the answer must not wait for the rest.
    answer, closed = send_and_read(web, request(head, b"4" * 5_000))
    assert closed
    status, body, headers = json_error(answer)
    assert status == 413 and "20000 bytes" in body["error"]
    assert headers["connection"] == "close"
    if session is not None:  # and the engine.io session it was for is over
        assert session.closed_by_server()
    assert_no_errors_logged(web)
