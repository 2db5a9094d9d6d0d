"""A `data` payload nested deeper than the JSON parser goes is answered like any other invalid
message (an ack `{ok: false, error}`, or an `error` event when no ack was asked for), on either
transport, and the connection stays; over HTTP the same body is a 400."""

from __future__ import annotations

import json

import orjson
import pytest
import requests

from tests.gateway_support import msg_ids
from tests.hostile.support import assert_no_errors_logged, joined_session

DEPTH = 1100  # beyond orjson's 1,024 levels and the standard library's recursion limit
NESTED = "[" * DEPTH + "]" * DEPTH
TOO_DEEP = "payload: nested too deeply"


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_a_payload_nested_too_deeply_is_answered_and_the_connection_stays(
        mysql_backend, start_web, transport):
    web = start_web(mysql_backend)
    with joined_session(web, transport, "mallory") as session:
        session.send(f'425["data",{{"msg_id":"deep","message":{NESTED}}}]')
        assert session.receive() == "435" + json.dumps([{"ok": False, "error": TOO_DEEP}],
                                                      separators=(",", ":"))
        session.send(f'42["data",{NESTED}]')  # no ack asked: an error event
        assert json.loads(session.receive()[2:]) == ["error", {"ok": False, "error": TOO_DEEP}]
        session.send("4" + "2" + "[" * 3000)  # a run of brackets that never closes
        assert json.loads(session.receive()[2:]) == ["error", {"ok": False, "error": TOO_DEEP}]

        session.send('426["data",{"msg_id":"fine","message":"x"}]')
        assert orjson.loads(session.receive()[3:])[0]["ok"] is True
    assert msg_ids(mysql_backend.redis, "mallory") == ["fine"]
    assert_no_errors_logged(web)


def test_over_http_the_same_payload_is_a_400(mysql_backend, start_web):
    web = start_web(mysql_backend)
    answer = requests.post(f"{web.url}/api/messages", timeout=10,
                           data=f'{{"msg_id":"deep","message":{NESTED}}}',
                           headers={"Authorization": f"Bearer {web.token('mallory')}",
                                    "Content-Type": "application/json"})
    assert answer.status_code == 400
    assert "error" in answer.json()
    assert_no_errors_logged(web)
