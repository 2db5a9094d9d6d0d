"""Pages in a real browser (Chromium, tests/browser_support.py): the demo page and
`tributary.js` lose nothing when the web process is killed, when the page is reloaded, or when
the access token expires; a plain socket.io page gets its messages stored; a page from an
origin the server does not accept hears why it may not connect."""

from __future__ import annotations

import json
import signal
import time
import urllib.parse

import sqlalchemy as sa

from engine.schema import messages
from tests.browser_support import (
    SOCKET_IO_UMD,
    STATIC,
    all_settled,
    count,
    page,  # noqa: F401 (fixtures)
    playwright,  # noqa: F401
    record_msg_ids,
    sign_in,
    static_site,  # noqa: F401
    wait_for_connection,
    wait_for_generated,
)
from tests.conftest import make_jwt, unavailable, wait_until


def stored_msg_ids(db, user: str) -> list[str]:
    with db.connect() as conn:
        return list(conn.execute(sa.select(messages.c.msg_id)
                                 .where(messages.c.user_id == user)).scalars())


def assert_stored_exactly_once(db, user: str, generated: set[str]) -> None:
    stored = stored_msg_ids(db, user)
    assert len(stored) == len(set(stored))
    assert set(stored) == generated


def test_the_demo_page_loses_nothing_when_the_web_process_is_killed(
        page, mysql_backend, start_web, start_engine):
    web = start_web(mysql_backend)
    start_engine(mysql_backend)
    generated: set[str] = set()
    sign_in(page, web.url, "alice")
    record_msg_ids(page, generated)
    page.fill("#rate", "10")
    page.click("#start")
    wait_until(lambda: count(page, "stored") >= 5, 20, what="the first messages stored")

    web.process.kill()  # SIGKILL: acks in flight are lost, so are receipts
    assert web.process.popen.returncode == -signal.SIGKILL
    page.wait_for_selector("#connection:not([data-status=connected])")
    sent_before_restart = count(page, "generated")
    wait_for_generated(page, sent_before_restart + 5)  # queued while the server is gone
    start_web(mysql_backend, port=web.port)
    wait_for_connection(page)
    wait_for_generated(page, count(page, "generated") + 5)
    page.click("#start")  # stop

    wait_until(lambda: all_settled(page), 30, what="every message stored")
    assert count(page, "stored") == count(page, "generated") == len(generated)
    assert count(page, "refused") == 0
    assert_stored_exactly_once(mysql_backend.db, "alice", generated)
    assert not page.problems, page.problems
