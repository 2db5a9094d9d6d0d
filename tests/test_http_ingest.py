"""HTTP batch ingest: POST /api/messages with a Bearer token, answered per item."""

from __future__ import annotations

import json

import orjson
import requests

from engine import keys
from tests.gateway_support import entries, msg_ids
from tests.test_socket_ingest import INVALID, OVERRIDE_WARNING


def send(web, token: str, body: object = None, *, data: bytes | str | None = None,
         content_type: str = "application/json") -> requests.Response:
    payload = data if data is not None else orjson.dumps(body)
    return requests.post(f"{web.url}/api/messages", data=payload, timeout=10,
                         headers={"Authorization": f"Bearer {token}",
                                  "Content-Type": content_type})


def test_a_batch_is_answered_per_item_and_its_valid_items_are_written_in_order(
        mysql_backend, start_web):
    web = start_web(mysql_backend, MAX_MESSAGE_BYTES=64)
    token = web.token("alice")
    batch = [{"msg_id": "a", "message": "1", "timestamp": "2026-11-26T12:00:00+02:00"},
             {"msg_id": "b", "message": 2},
             {"msg_id": "c", "message": "3", "user_id": "bob"},
             ["not", "an", "object"],
             {"msg_id": "e", "message": "5", "value": 1.5}]
    answer = send(web, token, batch)
    assert answer.status_code == 202
    body = answer.json()
    assert (body["accepted"], body["rejected"]) == (3, 2)
    assert body["errors"] == [
        {"index": 1, "ok": False, "error": "message: must be a string", "msg_id": "b"},
        {"index": 3, "ok": False, "error": "payload: must be a JSON object"}]
    results = body["results"]
    assert [result["ok"] for result in results] == [True, False, True, False, True]
    assert results[2] == {"ok": True, "id": results[2]["id"], "msg_id": "c",
                          "user_id": "alice", "warning": OVERRIDE_WARNING}
    assert [entry_id for entry_id, _ in entries(mysql_backend.redis, "alice")] == [
        results[0]["id"], results[2]["id"], results[4]["id"]]
    assert entries(mysql_backend.redis, "alice")[0][1]["timestamp"] == (
        "2026-11-26T10:00:00.000Z")
    assert not mysql_backend.redis.exists(keys.stream("bob"))

    single = send(web, token, {"msg_id": "f", "message": "one object"})
    assert single.status_code == 202
    assert single.json()["accepted"] == 1 and single.json()["results"][0]["msg_id"] == "f"

    many = send(web, token, [{"msg_id": f"n-{n}", "message": str(n)} for n in range(200)])
    assert many.json()["accepted"] == 200
    assert msg_ids(mysql_backend.redis, "alice") == (
        ["a", "c", "e", "f"] + [f"n-{n}" for n in range(200)])


def test_http_items_are_validated_like_socket_messages(mysql_backend, start_web):
    web = start_web(mysql_backend, MAX_MESSAGE_BYTES=64)
    token = web.token("alice")
    # The stdlib encoder writes NaN, Infinity, huge integers and lone surrogates, as a sloppy
    # client would.
    body = json.dumps([payload for payload, _ in INVALID])
    answer = send(web, token, data=body)
    assert answer.status_code == 202, answer.text
    results = answer.json()["results"]
    assert len(results) == len(INVALID) and answer.json()["accepted"] == 0
    for (payload, error), result in zip(INVALID, results):
        assert result["ok"] is False and result["error"].startswith(error), (payload, result)
    assert not mysql_backend.redis.xlen(keys.stream("alice"))


def test_a_body_that_is_not_json_or_has_too_many_items_is_refused_and_a_huge_one_is_413(
        mysql_backend, start_web):
    web = start_web(mysql_backend, MAX_BATCH_ITEMS=3, MAX_FRAME_BYTES=4096)
    token = web.token("alice")
    for data, content_type in (("{not json", "application/json"), ("", "application/json"),
                               ("hello", "text/plain"), ("42", "application/json"),
                               ('"text"', "application/json"),
                               ("[" * 4000, "application/json")):  # nested beyond parsing
        answer = send(web, token, data=data, content_type=content_type)
        assert answer.status_code == 400, data
        assert answer.json()["error"].startswith("body: ")
    for count in (0, 4):
        answer = send(web, token, [{"message": str(n)} for n in range(count)])
        assert (answer.status_code, answer.json()) == (
            400, {"error": "body: must hold 1 to 3 messages"})
    too_big = send(web, token, [{"message": "x" * 2000}, {"message": "y" * 2000},
                                {"message": "z" * 200}])
    assert too_big.status_code == 413
    assert "error" in too_big.json()
    assert not mysql_backend.redis.exists(keys.stream("alice"))
    assert send(web, token, [{"message": "x" * 1000}] * 3).status_code == 202
