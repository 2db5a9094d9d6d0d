"""Sessions the server ends, seen from a real browser (Chromium, tests/browser_support.py).

When a live connection's token expires, the server sends `session_ended` "token expired" and
disconnects it: the page refreshes its token, connects again and goes on sending, losing
nothing. When the token is revoked (a logout) or the account disabled, the page stops with the
reason on screen, and every message the server accepted still reaches MySQL; the messages it
did not accept stay in the page's outbox, and a later sign-in sends them.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import requests

from tests.browser_support import (
    all_settled,
    count,
    open_demo_with_tokens,
    record_msg_ids,
    sign_in,
    stored_msg_ids,
    wait_for_connection,
    wait_for_generated,
)
from tests.conftest import ROOT, make_jwt, service_env, wait_until


def record_states(page: Any) -> dict[str, list[str]]:
    """Every state the page's client reports for each of its messages, from now on."""
    states: dict[str, list[str]] = {}
    page.expose_function("recordState",
                         lambda msg_id, state: states.setdefault(msg_id, []).append(state))
    page.wait_for_function("window.demo && window.demo.client")
    page.evaluate("demo.client.on('state', (msgId, state) => window.recordState(msgId, state))")
    return states


def record_session_ends(page: Any) -> None:
    """Collect in `window.sessionEnds` the reasons the server gave for ending the session."""
    page.evaluate("""window.sessionEnds = [];
        demo.client.on('connection', (status, detail) => {
          if (detail.ended) window.sessionEnds.push(detail.ended);
        })""")


class HeldRefreshes:
    """Holds the page's requests to /api/auth/refresh until released: the library's own
    refresh, asked before the token expires, cannot complete before the server ends the
    session."""

    def __init__(self, page: Any) -> None:
        self.held: list[Any] = []
        self.released = False
        page.route("**/api/auth/refresh", self._route)

    def _route(self, route: Any) -> None:
        if self.released:
            route.continue_()
        else:
            self.held.append(route)

    def release(self) -> None:
        self.released = True
        for route in self.held:
            route.continue_()


def test_a_page_whose_token_expires_on_the_server_refreshes_it_and_loses_nothing(
        page, mysql_backend, start_web, start_engine):
    web = start_web(mysql_backend)
    start_engine(mysql_backend)
    web.token("alice")
    refreshes = HeldRefreshes(page)
    # The login would give 15 minutes; this token lives 5 seconds.
    first_token = make_jwt("alice", lifetime=5)
    expires = time.time() + 5
    open_demo_with_tokens(page, web, first_token,
                          make_jwt("alice", token_type="refresh", lifetime=3600))
    wait_for_connection(page)
    generated: set[str] = set()
    record_msg_ids(page, generated)
    record_session_ends(page)
    page.fill("#rate", "10")
    page.click("#start")

    wait_until(lambda: page.evaluate("sessionEnds.length") > 0, 10,
               what="the server to end the session when the token expires")
    assert time.time() >= expires - 1  # iat and exp have whole seconds
    assert page.evaluate("sessionEnds") == ["token expired"]
    # The library asked for a fresh token before the expiry (its own refresh, held here) and
    # again on hearing "token expired": both wait for the same request.
    assert len(refreshes.held) == 1
    assert page.evaluate("demo.client.stopped") is None
    sent_before_refresh = count(page, "generated")
    wait_for_generated(page, sent_before_refresh + 5)  # queued while there is no token
    assert count(page, "stored") < count(page, "generated")

    refreshes.release()
    wait_for_connection(page)
    wait_until(lambda: page.evaluate("demo.session.access_token") != first_token, 10,
               what="the page to keep the fresh token")
    wait_for_generated(page, count(page, "generated") + 5)
    page.click("#start")  # stop
    wait_until(lambda: all_settled(page), 20, what="every message stored")
    assert count(page, "stored") == count(page, "generated") == len(generated)
    assert count(page, "refused") == 0
    stored = stored_msg_ids(mysql_backend.db, "alice")
    assert len(stored) == len(set(stored)) and set(stored) == generated
    assert page.evaluate("sessionEnds") == ["token expired"]
    assert not page.problems, page.problems


def rate_limited(per_second: int) -> dict[str, int]:
    """A tight rate limit: it keeps a burst in the page's outbox ("rate limited" messages wait
    there to be sent again, `per_second` a second), so that the session ends with messages the
    server has not accepted."""
    return {"RATE_LIMIT": per_second, "RATE_BURST": 10}


def send_until_some_are_stored(page: Any) -> dict[str, list[str]]:
    """Send a few messages a second until some are stored, then a burst of 40 the rate limit
    holds back; returns the states of the page's messages."""
    states = record_states(page)
    page.fill("#rate", "5")
    page.click("#start")
    wait_until(lambda: count(page, "stored") >= 5, 20, what="the first messages stored")
    page.fill("#burst-size", "40")
    page.click("#burst")
    return states


def stopped_with(page: Any, reason: str) -> None:
    page.wait_for_selector("#connection[data-status=stopped]", timeout=5_000)
    assert page.text_content("#connection") == f"stopped: {reason}"
    assert page.is_visible("#stopped")
    assert page.text_content("#stopped").startswith(f"Stopped: {reason}.")
    assert page.evaluate("demo.client.stopped") == reason
    assert page.evaluate("sessionEnds") == [reason]
    assert page.text_content("#start") == "Start"  # the page stopped generating


def nothing_accepted_is_lost(page: Any, db: Any, states: dict[str, list[str]]) -> set[str]:
    """Every message the server accepted reaches MySQL, once; every other one is still in the
    page's outbox (persisted). Returns the msg_ids of the page's messages."""
    wait_until(lambda: len(states) == count(page, "generated"), 5,
               what="every message's states recorded")
    generated = set(states)
    accepted = {msg_id for msg_id, seen in states.items() if "accepted" in seen}
    held = {msg_id for msg_id, seen in states.items() if seen[-1] == "queued"}
    assert accepted and held  # the session ended with a backlog in the outbox
    assert all(seen[-1] in ("queued", "accepted", "stored") for seen in states.values())
    assert accepted | held == generated
    wait_until(lambda: accepted <= set(stored_msg_ids(db, "alice")), 15,
               what="every accepted message in MySQL")
    stored = stored_msg_ids(db, "alice")
    assert len(stored) == len(set(stored)) and set(stored) <= generated
    assert page.evaluate("demo.client.pending()") == len(held)
    persisted = set(page.evaluate(
        "Object.keys(localStorage).filter(k => k.startsWith('tributary:'))"
        ".map(k => k.split(':').pop())"))
    assert held <= persisted
    return generated


def test_logging_out_the_pages_token_stops_the_page_with_the_reason_and_loses_nothing(
        page, mysql_backend, start_web, start_engine):
    # The logout is at once; 10 a second sends the kept messages quickly after signing in again.
    web = start_web(mysql_backend, **rate_limited(10))
    start_engine(mysql_backend)
    sign_in(page, web.url, "alice", persist=True)
    record_session_ends(page)
    states = send_until_some_are_stored(page)

    token = page.evaluate("demo.session.access_token")
    logout = requests.post(f"{web.url}/api/auth/logout", timeout=10,
                           headers={"Authorization": f"Bearer {token}"})
    assert logout.json() == {"revoked": 1}
    stopped_with(page, "token revoked")
    generated = nothing_accepted_is_lost(page, mysql_backend.db, states)

    # Signing in again sends what the stopped page kept.
    page.click("#logout")
    page.wait_for_selector("#login:not([hidden])")
    sign_in(page, web.url, "alice", register=False, persist=True)
    wait_until(lambda: set(stored_msg_ids(mysql_backend.db, "alice")) == generated, 20,
               what="the kept messages stored after signing in again")
    assert len(stored_msg_ids(mysql_backend.db, "alice")) == len(generated)
    assert not page.problems, page.problems


def test_disabling_the_account_stops_the_page_with_the_reason_and_loses_nothing_accepted(
        page, mysql_backend, start_web, start_engine):
    # The command takes a few seconds to start: the burst must outlast it.
    web = start_web(mysql_backend, **rate_limited(1))
    start_engine(mysql_backend)
    sign_in(page, web.url, "alice", persist=True)
    record_session_ends(page)
    states = send_until_some_are_stored(page)

    done = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "disable-user",
                           "alice"], env=service_env(mysql_backend), cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    stopped_with(page, "account disabled")
    nothing_accepted_is_lost(page, mysql_backend.db, states)
    assert not page.problems, page.problems
