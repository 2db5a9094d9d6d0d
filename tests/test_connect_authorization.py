"""A socket.io connect is authorized in one Redis round trip with the account's role and
disabled flag read from a cached copy, and the cache weakens nothing: an account disabled or a
token revoked is refused on the very next connect, an account enabled again or given another
role is read afresh, and a refused connect counts and creates nothing."""

from __future__ import annotations

import orjson

from engine import keys
from tests.conftest import make_jwt
from tests.gateway_support import connected, refused
from webapp.revocation import TOKEN_REVOKED, revoke_token
from webapp.users import set_disabled, set_role


def cached(backend, username: str) -> dict | None:
    record = backend.redis.get(keys.account(username))
    return None if record is None else orjson.loads(record)


def test_a_connect_caches_the_account_and_a_disabled_one_is_refused_on_the_very_next_connect(
        mysql_backend, start_web):
    web = start_web(mysql_backend)
    token = web.token("alice")
    with connected(web.url, token) as client:
        assert client.call({"message": "hi"})["ok"] is True
    record = cached(mysql_backend, "alice")
    assert (record["role"], record["disabled"]) == ("user", False)

    # Disabled as the CLI and the admin views do it, but without revoking the tokens: only the
    # dropped cache can refuse this token now.
    set_disabled(mysql_backend.db, "alice", True, redis=mysql_backend.redis)

    assert cached(mysql_backend, "alice") is None
    assert refused(web.url, token) == "account disabled"
    assert cached(mysql_backend, "alice")["disabled"] is True
    assert refused(web.url, token) == "account disabled"  # now from the cached copy
    assert mysql_backend.redis.hlen(keys.connections("alice")) == 0

    set_disabled(mysql_backend.db, "alice", False, redis=mysql_backend.redis)
    with connected(web.url, token) as client:
        assert client.call({"message": "back"})["ok"] is True


def test_a_revoked_token_is_refused_on_the_very_next_connect_with_the_account_cached(
        mysql_backend, start_web):
    web = start_web(mysql_backend)
    token = web.token("alice")
    with connected(web.url, token):
        pass
    assert cached(mysql_backend, "alice") is not None

    revoke_token(mysql_backend.redis, {"jti": _jti(token), "exp": 2**31})

    assert refused(web.url, token) == TOKEN_REVOKED
    with connected(web.url, web.token("alice")) as client:  # another token of the same user
        assert client.call({"message": "hi"})["ok"] is True


def test_a_refused_connect_counts_and_creates_nothing(mysql_backend, start_web):
    web = start_web(mysql_backend)
    web.token("bob")
    set_disabled(mysql_backend.db, "bob", True, redis=mysql_backend.redis)
    assert refused(web.url, make_jwt("bob")) == "account disabled"
    assert refused(web.url, make_jwt("nobody")) == "invalid token"

    for user in ("bob", "nobody"):
        assert not mysql_backend.redis.exists(keys.stream(user))
        assert not mysql_backend.redis.exists(keys.connections(user))
        assert not mysql_backend.redis.sismember(keys.queues_of(user), user)
    assert cached(mysql_backend, "nobody") is None


def test_a_role_change_drops_the_cached_account(mysql_backend, start_web):
    web = start_web(mysql_backend)
    token = web.token("carol")
    with connected(web.url, token):
        pass
    assert cached(mysql_backend, "carol")["role"] == "user"

    set_role(mysql_backend.db, "carol", "viewer", redis=mysql_backend.redis)

    assert cached(mysql_backend, "carol") is None
    with connected(web.url, token):
        pass
    assert cached(mysql_backend, "carol")["role"] == "viewer"


def _jti(token: str) -> str:
    import jwt

    return str(jwt.decode(token, options={"verify_signature": False})["jti"])
