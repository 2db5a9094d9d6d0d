"""Input that used to be accepted (or refused with one message for everything) and now gets a
refusal naming what was wrong, writing nothing.

Timestamps are the ISO-8601 date-times the README lists, nothing looser; values stay within
±2^53 so they are stored exactly; unknown fields are refused; request bodies must be UTF-8
JSON, and bad JSON, bad UTF-8 and over-deep nesting each say so.
"""

from __future__ import annotations

import requests

from engine import keys
from tests.gateway_support import connected

TIMESTAMP_FORM = ("timestamp: must be an ISO-8601 date-time string "
                  "(YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM])")
VALUE_RANGE = ("value: must be between -2^53 and 2^53 "
               "(-9007199254740992 and 9007199254740992)")

REFUSED = {
    "a trailing NUL": ({"timestamp": "2026-11-26T10:00:00Z\x00"}, TIMESTAMP_FORM),
    "a fraction point without digits": ({"timestamp": "2026-11-26T10:00:00.Z"}, TIMESTAMP_FORM),
    "an ISO week date": ({"timestamp": "2026-W48-4"}, TIMESTAMP_FORM),
    "an ISO week date-time": ({"timestamp": "2026-W48-4T10:00:00Z"}, TIMESTAMP_FORM),
    "the basic format": ({"timestamp": "20261126T100000Z"}, TIMESTAMP_FORM),
    "a date alone": ({"timestamp": "2026-11-26"}, TIMESTAMP_FORM),
    "an ordinal date": ({"timestamp": "2026-330T10:00:00Z"}, TIMESTAMP_FORM),
    "a trailing newline": ({"timestamp": "2026-11-26T10:00:00Z\n"}, TIMESTAMP_FORM),
    "Arabic-Indic digits": ({"timestamp": "٢٠٢٦-11-26T10:00:00Z"}, TIMESTAMP_FORM),
    "2^53 + 1": ({"value": 2**53 + 1}, VALUE_RANGE),
    "2^63": ({"value": 2**63}, VALUE_RANGE),
    "1e308": ({"value": 1e308}, VALUE_RANGE),
    "an unknown field": ({"vaule": 5}, "vaule: unknown field (a message has msg_id, message, "
                         "user_id, timestamp, value, key)"),
}


def test_loose_input_is_refused_over_socket_io_naming_what_was_wrong(mysql_backend, start_web):
    web = start_web(mysql_backend)
    with connected(web.url, web.token("alice")) as client:
        for case, (fields, error) in REFUSED.items():
            answer = client.call({"msg_id": "m", "message": "x", **fields})
            assert answer == {"ok": False, "error": error, "msg_id": "m"}, case
        # The exact forms are accepted, and normalized.
        answer = client.call({"message": "x", "value": 2**53,
                              "timestamp": "2026-11-26 12:00:00.5+02:00"})
        assert answer["ok"] is True
    [(_, fields)] = mysql_backend.redis.xrange(keys.stream("alice"))
    assert b'"timestamp":"2026-11-26T10:00:00.500Z"' in fields["d"].encode()


def post(web, token: str, data: bytes, content_type: str = "application/json"
         ) -> requests.Response:
    return requests.post(f"{web.url}/api/messages", data=data, timeout=10,
                         headers={"Authorization": f"Bearer {token}",
                                  "Content-Type": content_type})


BODIES = {
    "UTF-16 with a byte-order mark": ('[{"message": "x"}]'.encode("utf-16"),
                                      "body: must be encoded in UTF-8"),
    "UTF-16 without one": ('[{"message": "x"}]'.encode("utf-16-le"),
                           "body: must be encoded in UTF-8"),
    "UTF-32": ('{"message": "x"}'.encode("utf-32"), "body: must be encoded in UTF-8"),
    "UTF-8 with a byte-order mark": (b'\xef\xbb\xbf{"message": "x"}',
                                     "body: must be encoded in UTF-8"),
    "Latin-1": ('{"message": "café"}'.encode("latin-1"),
                "body: is not valid UTF-8 (at byte 16)"),
    "bad JSON": (b'{"message": "x",}', "body: is not valid JSON ("),
    "nesting beyond the limit": (b"[" * 5000 + b"]" * 5000,
                                 "body: is nested too deeply (more than 1024 levels)"),
    "an empty body": (b"", "body: is empty; send a JSON document"),
}


def test_each_bad_body_gets_its_own_answer_and_writes_nothing(mysql_backend, start_web):
    web = start_web(mysql_backend)
    token = web.token("alice")
    answers = {}
    for case, (data, error) in BODIES.items():
        answer = post(web, token, data)
        assert answer.status_code == 400, case
        assert answer.json()["error"].startswith(error), (case, answer.json())
        answers[case] = answer.json()["error"]
    # Not JSON at all is its own answer too.
    answer = post(web, token, b"message=x", "application/x-www-form-urlencoded")
    assert (answer.status_code, answer.json()) == (
        400, {"error": "body: must be JSON, sent with Content-Type: application/json"})
    assert len({answers["Latin-1"], answers["bad JSON"],
                answers["nesting beyond the limit"]}) == 3
    assert not mysql_backend.redis.exists(keys.stream("alice"))
    # The same checks guard the login body.
    login = requests.post(f"{web.url}/api/auth/login", data='{"username": "alice"}'.encode(
        "utf-16"), headers={"Content-Type": "application/json"}, timeout=10)
    assert login.status_code == 400
    assert login.json()["error"].startswith("body: must be encoded in UTF-8")
