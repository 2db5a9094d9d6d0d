"""A client sending what socket.io or engine.io cannot decode is disconnected with one warning
line, no traceback, and nobody else notices."""

from __future__ import annotations

import json

import websocket

from engine import keys
from tests.conftest import wait_until
from tests.gateway_support import connected

#: Text frames a broken or hostile client might send, and what the warning line says of each.
MALFORMED = [
    ("42[invalid json", "malformed socket.io packet"),
    ("49", "malformed socket.io packet"),  # no such socket.io packet type
    ('44{"message":"x"}', "malformed socket.io packet"),  # CONNECT_ERROR comes from servers
    ("x", "malformed engine.io packet"),
    ("", "malformed engine.io packet"),
]


def raw_session(url: str, token: str) -> websocket.WebSocket:
    """A websocket speaking engine.io and socket.io by hand, joined to the namespace."""
    raw = websocket.create_connection(
        url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket", timeout=10)
    assert raw.recv().startswith("0{")
    raw.send("40" + json.dumps({"token": token}))
    assert raw.recv().startswith("40{")
    return raw


def closed_by_server(raw: websocket.WebSocket) -> bool:
    """Read until the server closes the connection (recv gives "" on a close frame); a
    connection still open after the 10 s receive timeout fails the test."""
    try:
        while raw.recv() != "":
            pass
    except websocket.WebSocketConnectionClosedException:
        pass
    return True


def test_a_malformed_packet_is_one_warning_line_and_closes_only_that_connection(mysql_backend,
                                                                                start_web):
    web = start_web(mysql_backend)
    redis = mysql_backend.redis
    with connected(web.url, web.token("alice")) as alice:
        for number, (frame, warning) in enumerate(MALFORMED):
            raw = raw_session(web.url, web.token("mallory"))
            try:
                wait_until(lambda: redis.hlen(keys.connections("mallory")) == 1, 5,
                           what="mallory's connection to be counted")
                raw.send(frame)
                assert closed_by_server(raw)
            finally:
                raw.close()
            wait_until(lambda: redis.hlen(keys.connections("mallory")) == 0, 5,
                       what=f"mallory's connection to be counted out after {frame!r}")
            expected = [w for _, w in MALFORMED[:number + 1]].count(warning)
            wait_until(lambda w=warning, n=expected: web.process.log().count(w) == n, 5,
                       what=f"the warning about {frame!r}")
            ack = alice.call({"msg_id": f"m-{number}", "message": "still here"})
            assert ack["ok"] is True, ack

    log = web.process.log()
    assert "Traceback" not in log, log
    assert "from user mallory" in log and "'2[invalid json'" in log
    warnings = [line for line in log.splitlines() if "malformed" in line]
    assert len(warnings) == len(MALFORMED), log
    assert all(" WARNING " in line for line in warnings), warnings
    assert web.process.alive()
