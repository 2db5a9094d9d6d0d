"""Flow control at the gateway: per-user token buckets, the backlog cap, CORS, and the
transport's frame size limit."""

from __future__ import annotations

import orjson
import pytest
import requests
import socketio

from engine import keys
from tests.conftest import wait_until
from tests.gateway_support import connect, connected, entries, msg_ids

RATE_LIMITED = {"ok": False, "error": "rate limited"}
BACKLOG_FULL = "backlog full, retry later"


def post(web, token: str, body: object, **headers: str) -> requests.Response:
    return requests.post(f"{web.url}/api/messages", data=orjson.dumps(body), timeout=10,
                         headers={"Authorization": f"Bearer {token}",
                                  "Content-Type": "application/json", **headers})


def test_socket_messages_past_the_burst_are_rate_limited_as_a_suffix_until_tokens_refill(
        mysql_backend, start_web):
    web = start_web(mysql_backend, RATE_LIMIT=2, RATE_BURST=3)
    with connected(web.url, web.token("alice")) as client:
        acks = client.call([{"msg_id": "a", "message": "1"}, {"msg_id": "b", "message": "2"},
                            {"msg_id": "bad", "message": 3}, {"msg_id": "c", "message": "4"},
                            {"msg_id": "d", "message": "5"}, {"msg_id": "e", "message": "6"}])
        # The invalid item uses a turn of the burst too: the rate counts every item sent.
        assert [ack["ok"] for ack in acks] == [True, True, False, False, False, False]
        assert acks[2]["error"].startswith("message: ")
        assert acks[3] == {**RATE_LIMITED, "msg_id": "c"}
        assert acks[4] == {**RATE_LIMITED, "msg_id": "d"}
        assert acks[5] == {**RATE_LIMITED, "msg_id": "e"}
        assert client.call({"msg_id": "f", "message": "7"}) == {**RATE_LIMITED, "msg_id": "f"}
        refilled = wait_until(lambda: client.call({"msg_id": "g", "message": "8"})["ok"], 5,
                              interval=0.05, what="the bucket to refill")
        assert refilled
    assert msg_ids(mysql_backend.redis, "alice") == ["a", "b", "g"]


def test_http_batches_have_their_own_bucket_and_get_429_when_nothing_was_accepted(
        mysql_backend, start_web):
    web = start_web(mysql_backend, HTTP_RATE_LIMIT=0.5, HTTP_RATE_BURST=3, RATE_LIMIT=1,
                    RATE_BURST=1)
    token = web.token("alice")
    partly = post(web, token, [{"msg_id": str(n), "message": "x"} for n in range(5)])
    assert partly.status_code == 202
    assert partly.json()["accepted"] == 3
    assert partly.json()["errors"] == [{"index": 3, **RATE_LIMITED, "msg_id": "3"},
                                       {"index": 4, **RATE_LIMITED, "msg_id": "4"}]
    nothing = post(web, token, [{"msg_id": "5", "message": "x"}])
    assert nothing.status_code == 429
    assert nothing.headers["Retry-After"] == "2"
    assert nothing.json()["results"] == [{**RATE_LIMITED, "msg_id": "5"}]
    with connected(web.url, token) as client:  # the socket bucket is untouched
        assert client.call({"msg_id": "s", "message": "x"})["ok"] is True
    assert msg_ids(mysql_backend.redis, "alice") == ["0", "1", "2", "s"]
    bob = post(web, web.token("bob"), [{"message": "x"}] * 3)  # and so is everybody else's
    assert bob.json()["accepted"] == 3


def test_past_the_backlog_cap_messages_are_refused_and_the_stream_is_never_trimmed(
        mysql_backend, start_web):
    web = start_web(mysql_backend, MAX_BACKLOG_PER_USER=4)
    token = web.token("alice")
    with connected(web.url, token) as client:
        acks = client.call([{"msg_id": f"m-{n}", "message": "x"} for n in range(6)])
        assert [ack["ok"] for ack in acks] == [True] * 4 + [False] * 2
        assert acks[4] == {"ok": False, "error": BACKLOG_FULL, "msg_id": "m-4"}
        assert client.call({"message": "x"})["error"] == BACKLOG_FULL
        over_http = post(web, token, [{"message": "x"}]).json()
        assert over_http["accepted"] == 0 and over_http["errors"][0]["error"] == BACKLOG_FULL
        written = [entry_id for entry_id, _ in entries(mysql_backend.redis, "alice")]
        assert written == [ack["id"] for ack in acks[:4]]

        # The engine writes two of them and deletes them from the stream: room for two more.
        mysql_backend.redis.xdel(keys.stream("alice"), *written[:2])
        more = client.call([{"msg_id": f"n-{n}", "message": "x"} for n in range(3)])
        assert [ack["ok"] for ack in more] == [True, True, False]
        assert more[2]["error"] == BACKLOG_FULL
    assert msg_ids(mysql_backend.redis, "alice") == ["m-2", "m-3", "n-0", "n-1"]


def cors_headers(response: requests.Response) -> dict[str, str]:
    return {name: value for name, value in response.headers.items()
            if name.lower().startswith("access-control-")}


def test_the_default_cors_origin_may_connect_and_others_are_refused(mysql_backend, start_web):
    web = start_web(mysql_backend)
    token = web.token("alice")
    allowed, other = "http://localhost:5173", "https://evil.example"
    for transports in (("websocket",), ("polling",)):
        with connected(web.url, token, transports=transports, origin=allowed) as client:
            assert client.call({"message": "x"})["ok"] is True
        with pytest.raises(socketio.exceptions.ConnectionError):
            connect(web.url, token, transports=transports, origin=other)

    answer = post(web, token, {"message": "x"}, Origin=allowed)
    assert answer.status_code == 202
    assert cors_headers(answer)["Access-Control-Allow-Origin"] == allowed
    assert "Origin" in answer.headers["Vary"]
    preflight = requests.options(f"{web.url}/api/messages", timeout=10, headers={
        "Origin": allowed, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status_code in (200, 204)
    assert preflight.headers["Access-Control-Allow-Origin"] == allowed
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]

    refused_answer = post(web, token, {"message": "x"}, Origin=other)
    assert cors_headers(refused_answer) == {}
    refused_preflight = requests.options(f"{web.url}/api/messages", timeout=10, headers={
        "Origin": other, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert cors_headers(refused_preflight) == {}
    assert mysql_backend.redis.xlen(keys.stream("alice")) == 4


def test_a_configured_cors_origin_replaces_the_default(mysql_backend, start_web):
    web = start_web(mysql_backend,
                    CORS_ORIGINS="https://app.example.com, https://admin.example.com")
    token = web.token("alice")
    for origin in ("https://app.example.com", "https://admin.example.com"):
        with connected(web.url, token, origin=origin) as client:
            assert client.call({"message": "x"})["ok"] is True
        answer = post(web, token, {"message": "x"}, Origin=origin)
        assert answer.headers["Access-Control-Allow-Origin"] == origin
    with pytest.raises(socketio.exceptions.ConnectionError):
        connect(web.url, token, origin="http://localhost:5173")
    assert cors_headers(post(web, token, {"message": "x"}, Origin="http://localhost:5173")) == {}


def test_an_oversized_frame_closes_that_connection_only(mysql_backend, start_web):
    web = start_web(mysql_backend, MAX_FRAME_BYTES=20_000, MAX_MESSAGE_BYTES=30_000)
    mallory = web.token("mallory")
    offenders = [connect(web.url, mallory), connect(web.url, mallory, transports=("polling",))]
    with connected(web.url, web.token("alice")) as bystander:
        for offender in offenders:
            offender.send({"msg_id": "huge", "message": "x" * 25_000})
            wait_until(lambda offender=offender: offender.disconnected, 10,
                       what="the offender to be disconnected")
            assert bystander.call({"msg_id": "fine", "message": "x" * 15_000})["ok"] is True
            assert bystander.sio.connected
        wait_until(lambda: mysql_backend.redis.hlen(keys.connections("mallory")) == 0, 5,
                   what="the offenders' connections to be counted out")
    for offender in offenders:
        offender.close()
    assert msg_ids(mysql_backend.redis, "alice") == ["fine", "fine"]
    assert msg_ids(mysql_backend.redis, "mallory") == []
    assert web.process.alive()
    assert "Traceback" not in web.process.log()
