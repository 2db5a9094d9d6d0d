"""The Messages view: stored messages newest first in keyset pages that lose and repeat
nothing, filtered by user, time range, msg_id and key; bad filters said plainly; a CSV export
of the filtered set, limited to EXPORT_MAX_ROWS, that a spreadsheet will not run as formulas."""

from __future__ import annotations

import csv
import io
import re
import time

import pytest

from engine.storage import Row, open_storage
from tests.admin_support import ensure_account, signed_in
from tests.conftest import TEST_DATABASE_URL

BASE_MS = 1_795_000_000_000


def iso(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(BASE_MS / 1000 + second)) + ".000Z"


def stored(user: str, n: int, *, key: str | None = None, message: str | None = None) -> Row:
    at = BASE_MS + n * 1000
    return Row(user, f"{at}-{n}", f"{user}-{n}", message or f"message {n}", float(n), key,
               iso(n), at)


def shown(page: str) -> list[str]:
    return re.findall(r'<tr data-msg-id="([^"]+)"', page)


def older(page: str) -> str | None:
    found = re.search(r'id="older" href="([^"]+)"', page)
    return found.group(1).replace("&amp;", "&") if found else None


@pytest.fixture
def viewer(mysql_backend, start_web):
    ensure_account(mysql_backend, "watcher", "viewer")
    storage = open_storage(TEST_DATABASE_URL)
    try:
        storage.write([stored("alice", n, key="k" if n % 2 else None) for n in range(230)] +
                      [stored("bob", n) for n in range(3)] +
                      [stored("carol", 0, message="=HYPERLINK(\"http://evil\")")])
    finally:
        storage.close()
    web = start_web(mysql_backend, EXPORT_MAX_ROWS=150)
    return signed_in(web.url, "watcher")


def test_pages_follow_cursors_newest_first_without_losing_or_repeating_a_row(viewer):
    seen, path = [], "/admin/messages/?user=alice"
    while path:
        page = viewer.get(path)
        assert page.status_code == 200
        seen += shown(page.text)
        path = older(page.text)
    assert seen == [f"alice-{n}" for n in range(229, -1, -1)]


def test_filters_by_time_range_msg_id_and_key(viewer):
    since, until = iso(10)[:19], iso(20)[:16]  # seconds, and minutes as a browser sends them
    page = viewer.get("/admin/messages/", params={"user": "alice", "since": since,
                                                  "until": until}).text
    assert shown(page) == [f"alice-{n}" for n in range(19, 9, -1)]
    assert shown(viewer.get("/admin/messages/", params={"msg_id": "bob-1"}).text) == ["bob-1"]
    keyed = shown(viewer.get("/admin/messages/", params={"user": "alice", "key": "k"}).text)
    assert keyed[:3] == ["alice-229", "alice-227", "alice-225"] and len(keyed) == 100


def test_a_bad_filter_is_said_plainly(viewer):
    page = viewer.get("/admin/messages/", params={"since": "yesterday"})
    assert page.status_code == 400
    assert "since: must be an ISO-8601 date-time" in page.text
    page = viewer.get("/admin/messages/", params={"cursor": "not-a-cursor"})
    assert page.status_code == 400 and "cursor: is not a cursor" in page.text
    assert viewer.get("/admin/messages/export.csv", params={"user": "no body"}) \
        .status_code == 400


def test_the_csv_export_holds_the_filtered_rows_up_to_the_limit(viewer):
    answer = viewer.get("/admin/messages/export.csv", params={"user": "bob"})
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in answer.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert [row["msg_id"] for row in rows] == ["bob-2", "bob-1", "bob-0"]
    assert rows[0]["timestamp"] == iso(2) and rows[0]["value"] == "2.0"
    limited = list(csv.DictReader(io.StringIO(
        viewer.get("/admin/messages/export.csv", params={"user": "alice"}).text)))
    assert len(limited) == 150  # EXPORT_MAX_ROWS
    carol = list(csv.DictReader(io.StringIO(
        viewer.get("/admin/messages/export.csv", params={"user": "carol"}).text)))
    assert carol[0]["message"] == "'=HYPERLINK(\"http://evil\")"
