"""The dashboard's live connection: a socket.io client signed in by the dashboard's session
cookie (no token) joins the room `dashboard` and hears the sampled figures and the engines'
stats; it cannot send messages; only a viewer's or admin's session from the dashboard's own
origin gets in; signing out or disabling the account ends it at once. The samples are kept,
so that an overview opened now has its charts' history."""

from __future__ import annotations

import json
import re

import pytest
import socketio

from tests.admin_support import COOKIE, ensure_account, signed_in
from tests.conftest import wait_until
from tests.gateway_support import connect, recording_client, refused

FAST = {"DASHBOARD_SAMPLE_INTERVAL": 0.5}


def dashboard(web, operator, **options):
    return connect(web.url, headers={"Cookie": f"{COOKIE}={operator.cookie}"}, **options)


@pytest.fixture
def accounts(mysql_backend):
    for name, role in (("boss", "admin"), ("watcher", "viewer"), ("plain", "user")):
        ensure_account(mysql_backend, name, role)


def test_a_viewer_hears_the_figures_and_the_engines_stats_and_cannot_send(
        mysql_backend, accounts, start_web, start_engine):
    web = start_web(mysql_backend, **FAST)
    start_engine(mysql_backend)
    viewer = signed_in(web.url, "watcher")
    client = dashboard(web, viewer)
    try:
        for event in ("overview", "stats"):
            client.sio.on(event, client.received(event).append)
        wait_until(lambda: client.received("overview") and client.received("stats"), 15,
                   what="a sample and an engine's stats")
        sample = client.received("overview")[-1]
        assert sample["web_processes"] == 1 and sample["engines"] == 1
        assert sample["dead_letters"] == 0
        assert {"accepted_per_s", "rows_per_s", "backlog", "pending", "oldest_age_s",
                "connections", "last_batch_size", "last_commit_ms"} <= set(sample)
        assert client.call({"msg_id": "m1", "message": "hi"}) == {
            "ok": False, "error": "not connected"}
        assert mysql_backend.redis.keys("ingest:*") == []  # nothing was queued for anyone
    finally:
        client.close()


def test_only_a_viewers_or_admins_session_from_the_dashboards_origin_gets_in(
        mysql_backend, accounts, start_web):
    web = start_web(mysql_backend)
    plain = signed_in(web.url, "plain")
    assert refused(web.url, headers={"Cookie": f"{COOKIE}={plain.cookie}"}) == \
        "dashboard: sign in as a viewer or admin"
    assert refused(web.url, headers={"Cookie": f"{COOKIE}=forged"}) == \
        "dashboard: sign in as a viewer or admin"
    assert refused(web.url) == "missing token"
    admin = signed_in(web.url, "boss")
    # A page of another origin cannot borrow the session (the server checks the Origin).
    other = "http://localhost:5173"  # a CORS origin that may send messages, not watch
    foreign = recording_client(origin=other)
    try:
        with pytest.raises(socketio.exceptions.ConnectionError):
            foreign.sio.connect(web.url, transports=["websocket"], wait_timeout=10,
                                headers={"Cookie": f"{COOKIE}={admin.cookie}", "Origin": other})
    finally:
        foreign.close()
    assert foreign.received("connect_error")[0]["message"] == "dashboard: foreign origin"
    client = dashboard(web, admin, origin=web.url)
    client.close()


def test_signing_out_ends_the_dashboard_connection_at_once(mysql_backend, accounts, start_web):
    web = start_web(mysql_backend)
    admin = signed_in(web.url, "boss")
    client = dashboard(web, admin)
    try:
        assert admin.post("/admin/logout").status_code == 302
        wait_until(lambda: client.received("session_ended") and client.disconnected, 5,
                   what="the dashboard connection to end")
        assert client.received("session_ended") == [{"reason": "token revoked"}]
    finally:
        client.close()


def test_disabling_an_account_from_the_dashboard_ends_all_its_live_connections(
        mysql_backend, accounts, start_web):
    web = start_web(mysql_backend)
    viewer = signed_in(web.url, "watcher")
    watching = dashboard(web, viewer)
    sending = connect(web.url, web.token("watcher", role="viewer"))  # a token's connection
    try:
        admin = signed_in(web.url, "boss")
        admin.post("/admin/users/action", {"action": "disable", "user": "watcher"})
        for client in (watching, sending):
            wait_until(lambda c=client: c.received("session_ended") and c.disconnected, 5,
                       what="the connection to end")
            assert client.received("session_ended") == [{"reason": "account disabled"}]
    finally:
        watching.close()
        sending.close()


def test_revoking_a_users_tokens_from_the_dashboard_ends_their_connections(
        mysql_backend, accounts, start_web):
    web = start_web(mysql_backend)
    sending = connect(web.url, web.token("plain"))
    try:
        admin = signed_in(web.url, "boss")
        admin.post("/admin/users/action", {"action": "revoke-tokens", "user": "plain"})
        wait_until(lambda: sending.received("session_ended") and sending.disconnected, 5,
                   what="the connection to end")
        assert sending.received("session_ended") == [{"reason": "token revoked"}]
    finally:
        sending.close()


def test_a_freshly_opened_overview_has_the_samples_of_the_last_minutes(
        mysql_backend, accounts, start_web):
    web = start_web(mysql_backend, **FAST)
    viewer = signed_in(web.url, "watcher")

    def samples() -> list[dict]:
        page = viewer.get("/admin/").text
        found = re.search(r'<script type="application/json" id="samples">(.*?)</script>',
                          page, re.S)
        assert found
        return json.loads(found.group(1))

    history = wait_until(lambda: len(samples()) >= 3 and samples(), 15, what="3 samples")
    times = [sample["t"] for sample in history]
    assert times == sorted(times) and len(set(times)) == len(times)
