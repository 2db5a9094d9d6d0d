"""The operator dashboard in a real browser (Chromium, tests/browser_support.py), against a real
web process and engine: an admin signs in and watches the overview's figures and charts move
while messages flow, without a reload; a dead letter is replayed with the Dead letters view's
buttons and its row reaches MySQL; a `user` who signs in is shown 403."""

from __future__ import annotations

import threading

import requests

from engine import control
from engine.storage import open_storage
from tests.admin_support import PASSWORD, ensure_account
from tests.conftest import wait_until
from tests.engine_support import append, payload, rows

FAST = {"DASHBOARD_SAMPLE_INTERVAL": 0.5}


def sign_in(page, url: str, username: str, path: str = "/admin/") -> None:
    page.goto(f"{url}{path}")
    page.wait_for_selector("#sign-in")  # an anonymous visitor is sent to the login page
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#sign-in")


def figure(page, name: str) -> str:
    return (page.text_content(f"#fig-{name}") or "").strip()


def test_the_overview_moves_while_messages_flow_without_a_reload(
        page, mysql_backend, start_web, start_engine):
    ensure_account(mysql_backend, "boss", "admin")
    web = start_web(mysql_backend, **FAST)
    start_engine(mysql_backend)
    sign_in(page, web.url, "boss")
    page.wait_for_selector("#live-status[data-status=live]")
    assert page.text_content("#signed-in-as").split()[0] == "boss"
    page.evaluate("window.sameDocument = true")  # gone if the page reloads
    points = int(page.get_attribute("#overview", "data-points") or 0)

    token = web.token("alice")
    stop = threading.Event()

    def send() -> None:
        n = 0
        while not stop.is_set():
            requests.post(f"{web.url}/api/messages", timeout=10,
                          headers={"Authorization": f"Bearer {token}"},
                          json=[payload(f"m{n}-{i}") for i in range(20)])
            n += 1
            stop.wait(0.1)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        wait_until(lambda: float(figure(page, "accepted_per_s") or 0) > 0, 20,
                   what="the accepted rate to show messages flowing")
        wait_until(lambda: float(figure(page, "rows_per_s") or 0) > 0, 20,
                   what="the write rate to show rows written")
    finally:
        stop.set()
        sender.join(10)
    wait_until(lambda: int(page.get_attribute("#overview", "data-points") or 0) >= points + 3,
               10, what="the charts to take new points")
    assert page.evaluate("window.sameDocument") is True
    assert figure(page, "engines") == "1" and figure(page, "web_processes") == "1"
    assert page.locator("#chart-rates canvas").count() == 1
    assert page.problems == []


def test_a_dead_letter_replayed_from_the_dashboard_reaches_mysql(
        page, mysql_backend, start_web, start_engine):
    ensure_account(mysql_backend, "boss", "admin")
    append(mysql_backend.redis, "alice", [payload("lost-1"), payload("lost-2")])
    storage = open_storage(mysql_backend.database_url)
    try:
        control.purge(mysql_backend.redis, storage, "alice", "ops")
    finally:
        storage.close()
    web = start_web(mysql_backend)
    start_engine(mysql_backend)
    sign_in(page, web.url, "boss", "/admin/dead-letters/")
    page.wait_for_selector("#dead-letters")
    first = page.get_attribute("#dead-letters tbody tr:last-child", "data-id")
    page.check(f"input[name=id][value='{first}']")
    page.click("button[data-action=replay]")
    page.wait_for_selector(".alert-success")
    assert "Replayed 1 of 1" in (page.text_content(".alert-success") or "")
    wait_until(lambda: [r.msg_id for r in rows(mysql_backend.db)] == ["lost-1"], 15,
               what="the replayed row in MySQL")
    assert page.problems == []


def test_a_user_who_signs_in_is_shown_403(page, mysql_backend, start_web):
    ensure_account(mysql_backend, "plain", "user")
    web = start_web(mysql_backend)
    statuses: list[int] = []
    page.on("response", lambda response: statuses.append(response.status)
            if response.url.rstrip("/").endswith("/admin") else None)
    sign_in(page, web.url, "plain")
    page.wait_for_selector("#denied")
    assert "viewers and admins" in (page.text_content("#denied") or "")
    assert statuses[-1] == 403
