"""Tokens signed with the right key but shaped unlike anything Tributary issues are refused,
on socket.io and over HTTP (defence in depth: forging them needs the signing key).

The subject names the account exactly: MySQL's PAD SPACE collation once let `sec_a ` (with a
trailing space) authenticate as `sec_a` and write to a stray queue `ingest:{sec_a }`.
"""

from __future__ import annotations

import time
import uuid

import jwt
import requests

from engine import keys
from tests.conftest import TEST_JWT_SECRET
from tests.gateway_support import refused

#: Marks a claim to leave out of the token.
MISSING = object()

LAX = {
    "a string exp": {"exp": "9999999999"},
    "a string iat": {"iat": "1"},
    "no iat": {"iat": MISSING},
    "an unknown type": {"type": "admin"},
    "a subject with a trailing space": {"sub": "sec_a "},
    "a subject with a leading space": {"sub": " sec_a"},
    "a subject that is not a string": {"sub": 42},
    "no jti": {"jti": MISSING},
    "an empty jti": {"jti": ""},
}


def lax_token(changes: dict) -> str:
    """A token for sec_a as the web app issues it, signed with its key, with `changes`."""
    now = int(time.time())
    claims = {"sub": "sec_a", "role": "user", "type": "access", "jti": str(uuid.uuid4()),
              "iat": now, "nbf": now, "exp": now + 900, "fresh": False, **changes}
    return jwt.encode({k: v for k, v in claims.items() if v is not MISSING}, TEST_JWT_SECRET,
                      algorithm="HS256")


def test_lax_tokens_are_refused_on_socket_io_and_over_http(mysql_backend, start_web):
    web = start_web(mysql_backend)
    web.token("sec_a")
    for case, changes in LAX.items():
        token = lax_token(changes)
        assert refused(web.url, token) == "invalid token", case
        for method, path, body in (("post", "/api/messages", {"message": "x"}),
                                   ("get", "/api/auth/me", None)):
            answer = requests.request(method, f"{web.url}{path}", json=body, timeout=10,
                                      headers={"Authorization": f"Bearer {token}"})
            assert (answer.status_code, answer.json()) == (401, {"error": "invalid token"}), \
                (case, path)
    assert not mysql_backend.redis.keys("ingest:*")


def test_the_exact_token_is_still_accepted(mysql_backend, start_web):
    web = start_web(mysql_backend)
    token = web.token("sec_a")
    answer = requests.post(f"{web.url}/api/messages", json={"message": "x"}, timeout=10,
                           headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 202, answer.text
    assert mysql_backend.redis.xlen(keys.stream("sec_a")) == 1
