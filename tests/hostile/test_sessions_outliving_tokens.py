"""A connection lives no longer than the token that opened it.

Revoking a token (logout) ends the connections it authenticated, at once and on every web
process; so do disabling a user and revoking all of a user's tokens. A connection whose token
expires is told so and closed. Each client hears why (`session_ended` `{reason}`) before the
server disconnects it, and its connection is counted out in Redis.
"""

from __future__ import annotations

import subprocess
import sys

import jwt
import requests

from engine import keys
from tests.conftest import ROOT, make_jwt, service_env, wait_until
from tests.gateway_support import Client, connect, connected, refused


def login(web, username: str) -> dict:
    web.token(username)  # creates the account (password-for-tests)
    answer = requests.post(f"{web.url}/api/auth/login", timeout=10,
                           json={"username": username, "password": "password-for-tests"})
    assert answer.status_code == 200, answer.text
    return answer.json()


def logout(web, token: str) -> None:
    answer = requests.post(f"{web.url}/api/auth/logout", timeout=10,
                           headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text


def ended(client: Client, reason: str, timeout: float = 5.0) -> None:
    """Wait until the server told `client` its session ended for `reason` and closed it."""
    wait_until(lambda: client.received("session_ended") and client.disconnected, timeout,
               what=f"the session to end ({reason})")
    assert client.received("session_ended") == [{"reason": reason}]
    assert not client.sio.connected


def connections(backend, user: str) -> int:
    return sum(int(count) for count in backend.redis.hgetall(keys.connections(user)).values())


def flask_command(backend, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *args],
                          env=service_env(backend), cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_logging_out_ends_the_connections_of_that_token_at_once(mysql_backend, start_web):
    web = start_web(mysql_backend)
    first, second = login(web, "alice"), login(web, "alice")
    with connected(web.url, first["access_token"]) as revoked, \
            connected(web.url, second["access_token"]) as other:
        assert revoked.call({"message": "before"})["ok"] is True
        wait_until(lambda: connections(mysql_backend, "alice") == 2, 5, what="two connections")
        logout(web, first["access_token"])
        ended(revoked, "token revoked")
        # The connection of another token of the same user is untouched.
        assert other.sio.connected and other.call({"message": "still here"})["ok"] is True
        wait_until(lambda: connections(mysql_backend, "alice") == 1, 5,
                   what="the ended connection to be counted out")
    assert refused(web.url, first["access_token"]) == "token revoked"


def test_a_logout_through_one_web_process_ends_connections_on_another(
        mysql_backend, start_web):
    first, second = start_web(mysql_backend), start_web(mysql_backend)
    tokens = login(first, "alice")
    with connected(second.url, tokens["access_token"]) as client:
        assert client.call({"message": "hello"})["ok"] is True
        logout(first, tokens["access_token"])
        ended(client, "token revoked")


def test_a_connection_ends_when_its_token_expires(mysql_backend, start_web):
    web = start_web(mysql_backend)
    web.token("alice")
    with connected(web.url, make_jwt("alice", lifetime=3)) as client:
        assert client.call({"message": "while valid"})["ok"] is True
        ended(client, "token expired", timeout=10)
    wait_until(lambda: connections(mysql_backend, "alice") == 0, 5,
               what="the expired connection to be counted out")


def test_disabling_a_user_ends_every_connection_of_theirs_and_refuses_new_ones(
        mysql_backend, start_web):
    first, second = start_web(mysql_backend), start_web(mysql_backend)
    token = first.token("alice")
    with connected(first.url, token) as one, connected(second.url, token) as two, \
            connected(first.url, first.token("bob")) as bystander:
        flask_command(mysql_backend, "disable-user", "alice")
        ended(one, "account disabled")
        ended(two, "account disabled")
        assert bystander.sio.connected and bystander.call({"message": "x"})["ok"] is True
    assert refused(first.url, make_jwt("alice")) == "account disabled"
    flask_command(mysql_backend, "enable-user", "alice")
    assert refused(first.url, token) == "account disabled"  # old tokens stay void
    # A token issued after the revocation (a later second: `iat` has whole seconds) works.
    wait_until(lambda: _connects(first.url, make_jwt("alice")), 5,
               what="a new token of alice to connect")


def test_revoking_all_of_a_users_tokens_ends_all_their_connections(mysql_backend, start_web):
    web = start_web(mysql_backend)
    with connected(web.url, web.token("alice")) as one, \
            connected(web.url, make_jwt("alice")) as two:
        flask_command(mysql_backend, "revoke-tokens", "alice")
        ended(one, "token revoked")
        ended(two, "token revoked")


def test_a_revocation_whose_announcement_was_missed_is_caught_by_the_periodic_check(
        mysql_backend, start_web):
    web = start_web(mysql_backend, REVOCATION_CHECK_INTERVAL=1)
    token = web.token("alice")
    with connected(web.url, token) as client:
        # Revoked in Redis, announced nowhere: as if this process's subscription was down.
        jti = _claims(token)["jti"]
        mysql_backend.redis.set(keys.revoked_token(jti), 1, ex=60)
        ended(client, "token revoked", timeout=5)


def _claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def _connects(url: str, token: str) -> bool:
    try:
        client = connect(url, token)
    except Exception:
        return False
    client.close()
    return True
