"""Authentication: the /api/auth endpoints, token checks over HTTP and on socket.io connect,
tokens kept out of the logs, the operator commands, disabled accounts."""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import orjson
import pytest
import requests
import sqlalchemy as sa

from engine import keys
from engine.schema import users
from tests.conftest import ROOT, TEST_JWT_SECRET, make_jwt, service_env
from tests.gateway_support import connected, refused

PASSWORD = "correct horse battery"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def post(web, path: str, token: str | None = None, *, headers: dict[str, str] | None = None,
         **kwargs) -> requests.Response:
    headers = {**(bearer(token) if token else {}), **(headers or {})}
    return requests.post(f"{web.url}{path}", headers=headers, timeout=10, **kwargs)


def get(web, path: str, token: str | None = None) -> requests.Response:
    return requests.get(f"{web.url}{path}", headers=bearer(token) if token else {}, timeout=10)


def login(web, username: str, password: str = PASSWORD) -> dict:
    response = post(web, "/api/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return response.json()


def register(web, username: str, password: str = PASSWORD) -> requests.Response:
    return post(web, "/api/auth/register", json={"username": username, "password": password})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def with_changed_payload(token: str, **claims) -> str:
    """The token with its payload edited and its signature left as it was."""
    header, payload, signature = token.split(".")
    decoded = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return ".".join([header, b64(orjson.dumps({**decoded, **claims})), signature])


def with_changed_signature(token: str) -> str:
    header, payload, signature = token.split(".")
    flipped = signature[:5] + ("A" if signature[5] != "A" else "B") + signature[6:]
    return ".".join([header, payload, flipped])


def bad_tokens(web) -> dict[str, tuple[str, str]]:
    """Tokens the server must refuse, each with the error it must give."""
    web.token("alice")
    return {
        "expired": (make_jwt("alice", lifetime=-30), "token expired"),
        "signature changed": (with_changed_signature(make_jwt("alice")), "invalid token"),
        "payload changed": (with_changed_payload(make_jwt("mallory"), sub="alice"),
                            "invalid token"),
        "alg none": (make_jwt("alice", algorithm="none"), "invalid token"),
        "wrong key": (make_jwt("alice", key="another-key-of-sufficient-length-0123456789"),
                      "invalid token"),
        "HS512 with the right key": (make_jwt("alice", algorithm="HS512"), "invalid token"),
        "refresh used as access": (make_jwt("alice", token_type="refresh"), "invalid token"),
        "not a jwt": ("not-a-token", "invalid token"),
    }


# --- the endpoints ------------------------------------------------------------------------------

def test_a_user_registers_logs_in_refreshes_and_logs_out(mysql_backend, start_web):
    web = start_web(mysql_backend)
    created = register(web, "carol")
    assert created.status_code == 201
    assert created.json() == {"id": created.json()["id"], "username": "carol", "role": "user"}
    wrong = post(web, "/api/auth/login", json={"username": "carol", "password": "wrong-pass"})
    assert (wrong.status_code, wrong.json()) == (401, {"error": "invalid username or password"})

    tokens = login(web, "carol")
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 15 * 60
    me = get(web, "/api/auth/me", tokens["access_token"])
    assert (me.status_code, me.json()) == (200, created.json())

    refreshed = post(web, "/api/auth/refresh", tokens["refresh_token"])
    assert refreshed.status_code == 200
    assert get(web, "/api/auth/me", refreshed.json()["access_token"]).status_code == 200
    as_access = get(web, "/api/auth/me", tokens["refresh_token"])
    assert (as_access.status_code, as_access.json()) == (401, {"error": "invalid token"})
    as_refresh = post(web, "/api/auth/refresh", tokens["access_token"])
    assert (as_refresh.status_code, as_refresh.json()) == (401, {"error": "invalid token"})

    other = login(web, "carol")
    out = post(web, "/api/auth/logout", tokens["access_token"],
               json={"refresh_token": tokens["refresh_token"]})
    assert (out.status_code, out.json()) == (200, {"revoked": 2})
    revoked_me = get(web, "/api/auth/me", tokens["access_token"])
    assert (revoked_me.status_code, revoked_me.json()) == (401, {"error": "token revoked"})
    revoked_refresh = post(web, "/api/auth/refresh", tokens["refresh_token"])
    assert (revoked_refresh.status_code, revoked_refresh.json()) == (
        401, {"error": "token revoked"})
    assert get(web, "/api/auth/me", other["access_token"]).status_code == 200

    revoked = list(mysql_backend.redis.scan_iter(keys.revoked_token("*")))
    ttls = sorted(mysql_backend.redis.ttl(key) for key in revoked)
    assert len(ttls) == 2
    assert 0 < ttls[0] <= 15 * 60 + 1  # until the access token would have expired
    assert 29 * 86400 < ttls[1] <= 30 * 86400 + 1  # and the refresh token


def test_logout_revokes_only_the_tokens_it_is_given(mysql_backend, start_web):
    web = start_web(mysql_backend)
    register(web, "carol")
    tokens = login(web, "carol")
    assert post(web, "/api/auth/logout", tokens["access_token"]).json() == {"revoked": 1}
    assert post(web, "/api/auth/refresh", tokens["refresh_token"]).status_code == 200
    # Once the access token is gone, the refresh token can log itself out.
    assert post(web, "/api/auth/logout", tokens["refresh_token"]).json() == {"revoked": 1}
    assert post(web, "/api/auth/refresh", tokens["refresh_token"]).status_code == 401

    fresh = login(web, "carol")
    someone_elses = make_jwt("mallory", token_type="refresh")
    refused_body = post(web, "/api/auth/logout", fresh["access_token"],
                        json={"refresh_token": someone_elses})
    assert refused_body.status_code == 400
    assert get(web, "/api/auth/me", fresh["access_token"]).status_code == 200


def test_registration_refuses_a_bad_or_taken_username_and_a_short_password(mysql_backend,
                                                                           start_web):
    web = start_web(mysql_backend)
    assert register(web, "dave").status_code == 201
    taken = register(web, "dave")
    assert (taken.status_code, taken.json()) == (409, {"error": "username: already taken"})
    bad_name = register(web, "no spaces allowed")
    assert bad_name.status_code == 400 and bad_name.json()["error"].startswith("username: ")
    short = register(web, "erin", "short")
    assert short.status_code == 400 and short.json()["error"].startswith("password: ")
    for garbage in ("{{{", "[" * 5000):
        answer = post(web, "/api/auth/register", data=garbage,
                      headers={"Content-Type": "application/json"})
        assert answer.status_code == 400 and answer.json()["error"].startswith("body: ")


# --- bad tokens, everywhere ---------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_bad_tokens_are_refused_over_http_with_the_reason(mysql_backend, start_web):
    web = start_web(mysql_backend)
    cases = bad_tokens(web)
    revoked = login(web, "alice", "password-for-tests")["access_token"]
    assert post(web, "/api/auth/logout", revoked).status_code == 200
    cases["revoked"] = (revoked, "token revoked")
    for name, (token, error) in cases.items():
        for method, path in ((get, "/api/auth/me"), (post, "/api/messages"),
                             (post, "/api/auth/logout")):
            if name == "refresh used as access" and path == "/api/auth/logout":
                continue  # logout takes either kind (test_logout_revokes_only_the_tokens…)
            answer = method(web, path, token)
            assert (answer.status_code, answer.json()) == (401, {"error": error}), (name, path)
    for headers in ({}, {"Authorization": "Basic YWxpY2U6cGFzc3dvcmQ="}):
        answer = requests.get(f"{web.url}/api/auth/me", headers=headers, timeout=10)
        assert (answer.status_code, answer.json()) == (401, {"error": "missing token"})
    for token, error in (
            (make_jwt("alice", token_type="refresh", lifetime=-30), "token expired"),
            (with_changed_signature(make_jwt("alice", token_type="refresh")), "invalid token"),
            (make_jwt("alice", token_type="refresh", algorithm="none"), "invalid token"),
            (make_jwt("alice", token_type="refresh", key="x" * 40), "invalid token")):
        answer = post(web, "/api/auth/refresh", token)
        assert (answer.status_code, answer.json()) == (401, {"error": error})
    assert not mysql_backend.redis.exists(keys.stream("alice"))


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_a_token_is_taken_from_auth_query_or_header_and_bad_ones_are_refused_on_connect(
        mysql_backend, start_web):
    web = start_web(mysql_backend)
    token = web.token("alice")
    for url, auth, headers in ((web.url, token, {}), (f"{web.url}?token={token}", None, {}),
                               (web.url, None, bearer(token))):
        with connected(url, auth, headers=headers) as client:
            assert client.call({"message": "hi"})["ok"] is True
    assert mysql_backend.redis.xlen(keys.stream("alice")) == 3

    cases = bad_tokens(web)
    revoked = login(web, "alice", "password-for-tests")["access_token"]
    post(web, "/api/auth/logout", revoked)
    cases["revoked"] = (revoked, "token revoked")
    for name, (bad, error) in cases.items():
        assert refused(web.url, bad) == error, name
        assert refused(f"{web.url}?token={bad}") == error, name
        assert refused(web.url, headers=bearer(bad)) == error, name
    assert refused(web.url) == "missing token"
    assert mysql_backend.redis.hlen(keys.connections("alice")) == 0


def test_tokens_never_appear_in_the_web_log(mysql_backend, start_web):
    web = start_web(mysql_backend, LOG_LEVEL="DEBUG")
    token = web.token("alice")
    with connected(f"{web.url}?token={token}", transports=("polling", "websocket")) as client:
        assert client.call({"message": "hi"})["ok"] is True
    expired = make_jwt("alice", lifetime=-30)
    assert refused(f"{web.url}?token={expired}") == "token expired"
    forged = make_jwt("alice", key="another-key-of-sufficient-length-0123456789")
    assert refused(web.url, forged) == "invalid token"
    assert refused(web.url, headers=bearer(forged)) == "invalid token"
    assert get(web, "/api/auth/me", forged).status_code == 401
    requests.get(f"{web.url}/socket.io/?EIO=4&transport=polling&token={forged}", timeout=10)
    log = web.process.log()
    assert "connection refused (token expired)" in log  # the refusals are logged…
    for secret in (token, expired, forged):
        for part in secret.split("."):
            assert part not in log  # …but no part of any token is
    assert TEST_JWT_SECRET not in log


# --- accounts -----------------------------------------------------------------------------------

def test_a_disabled_user_is_refused_everywhere(mysql_backend, start_web):
    web = start_web(mysql_backend)
    token = web.token("alice")
    tokens = login(web, "alice", "password-for-tests")
    with mysql_backend.db.begin() as conn:
        conn.execute(users.update().where(users.c.username == "alice").values(disabled=True))
    assert refused(web.url, token) == "account disabled"
    me = get(web, "/api/auth/me", token)
    assert (me.status_code, me.json()) == (401, {"error": "account disabled or removed"})
    assert post(web, "/api/messages", token, json={"message": "x"}).status_code == 401
    assert post(web, "/api/auth/refresh", tokens["refresh_token"]).status_code == 401
    again = post(web, "/api/auth/login", json={"username": "alice",
                                               "password": "password-for-tests"})
    assert again.status_code == 401
    assert not mysql_backend.redis.exists(keys.stream("alice"))


def test_create_admin_and_mint_token_commands_give_a_working_admin_token(mysql_backend,
                                                                         start_web):
    web = start_web(mysql_backend)
    env = service_env(mysql_backend)
    env.pop("ADMIN_PASSWORD", None)
    flask = [sys.executable, "-m", "flask", "--app", "wsgi"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*flask, *args], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done

    created = run("create-admin", "root")
    assert "created admin root" in created.stdout
    password = created.stdout.split("password (shown once): ")[1].strip()
    assert login(web, "root", password)["access_token"]
    token = run("mint-token", "root").stdout.strip()
    assert get(web, "/api/auth/me", token).json()["role"] == "admin"
    with connected(web.url, token) as client:
        assert client.call({"message": "from a minted token"})["ok"] is True
    missing = subprocess.run([*flask, "mint-token", "nobody"], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "nobody" in missing.stderr
    with mysql_backend.db.connect() as conn:
        assert conn.execute(sa.select(users.c.role).where(users.c.username == "root")
                            ).scalar_one() == "admin"
    assert os.environ.get("JWT_SECRET_KEY") != TEST_JWT_SECRET  # the env came from the test
