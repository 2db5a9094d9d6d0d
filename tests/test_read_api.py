"""The read side of the API: history pages with keyset cursors, aggregates per user and per key,
the service's totals, live subscriptions, roles, errors, and the generated OpenAPI document."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from engine.storage import Row, open_storage
from tests.conftest import TEST_DATABASE_URL, make_jwt, wait_until
from tests.engine_support import stats_mismatches
from tests.gateway_support import connected

BASE_MS = 1_795_000_000_000


def iso(second: int) -> str:
    """The timestamp of BASE + `second` seconds, as the API writes it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(BASE_MS / 1000 + second)) + ".000Z"


def stored(user: str, n: int, *, key: str | None = None, value: float | None = None,
           second: int | None = None) -> Row:
    """A row as the engine writes it; its timestamp is BASE + `second` (default n) seconds."""
    second = n if second is None else second
    at = BASE_MS + second * 1000
    return Row(user, f"{at}-{n}", f"{user}-{n}", f"message {n}", value, key, iso(second), at)


def get(web, path: str, token: str, **params) -> requests.Response:
    return requests.get(f"{web.url}{path}", params=params, timeout=10,
                        headers={"Authorization": f"Bearer {token}"})


def every_page(web, token: str, **params) -> list[str]:
    """msg_ids of every page, following the cursors."""
    seen, cursor = [], None
    while True:
        answer = get(web, "/api/messages", token, **params, **({"cursor": cursor} if cursor
                                                                 else {}))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        seen += [m["msg_id"] for m in body["messages"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return seen


@pytest.fixture
def web(mysql_backend, start_web):
    return start_web(mysql_backend)


@pytest.fixture
def storage(mysql_backend):
    store = open_storage(TEST_DATABASE_URL)
    yield store
    store.close()


def test_a_user_pages_through_their_own_messages_newest_first(web, storage):
    token = web.token("alice")
    web.token("bob")
    storage.write([stored("alice", n, key="k" if n % 2 else None, value=n) for n in range(25)] +
                  [stored("bob", n) for n in range(5)])
    first = get(web, "/api/messages", token, limit=10).json()
    assert [m["msg_id"] for m in first["messages"]] == [f"alice-{n}" for n in range(24, 14, -1)]
    assert first["messages"][0] == {
        "user_id": "alice", "msg_id": "alice-24", "message": "message 24", "value": 24.0,
        "key": None, "timestamp": iso(24), "received_at": iso(24),
        "stream_id": f"{BASE_MS + 24000}-24"}
    assert every_page(web, token, limit=10) == [f"alice-{n}" for n in range(24, -1, -1)]
    assert every_page(web, token, limit=7, order="oldest") == [f"alice-{n}" for n in range(25)]
    # Filters: a time range (since inclusive, until exclusive), a key, a msg_id.
    assert every_page(web, token, since=iso(5), until=iso(8)) == [
        "alice-7", "alice-6", "alice-5"]
    assert every_page(web, token, key="k", limit=4) == [f"alice-{n}" for n in range(23, 0, -2)]
    assert every_page(web, token, msg_id="alice-3") == ["alice-3"]


def test_paging_returns_every_row_exactly_once_while_rows_are_inserted(web, storage):
    token = web.token("alice")
    storage.write([stored("alice", n, second=n // 3) for n in range(300)])  # ties on time
    stop = threading.Event()

    def writer() -> None:
        inserter = open_storage(TEST_DATABASE_URL)
        n = 300
        try:
            while not stop.is_set():
                inserter.write([stored("alice", n + i, second=(n + i) % 150) for i in range(5)])
                n += 5
        finally:
            inserter.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for order in ("newest", "oldest"):
            before = {f"alice-{n}" for n in range(300)}
            seen = every_page(web, token, limit=17, order=order)
            assert len(seen) == len(set(seen)), "a row came twice"
            assert before <= set(seen), "a row that was there before was skipped"
    finally:
        stop.set()
        thread.join()


def test_no_user_reads_another_users_messages_or_figures(web, storage, mysql_backend):
    alice, bob = web.token("alice"), web.token("bob")
    storage.write([stored("bob", 1, key="secret", value=7.0)])
    forbidden = [get(web, "/api/messages", alice, user="bob"),
                 get(web, "/api/users/bob/stats", alice),
                 get(web, "/api/users/bob/keys/secret/stats", alice),
                 get(web, "/api/stats", alice)]
    for answer in forbidden:
        assert answer.status_code == 403 and answer.json()["error"].startswith("forbidden: ")
    # Filters never widen what a user reads: their own rows only, whatever else they say.
    assert every_page(web, alice, msg_id="bob-1") == []
    assert every_page(web, alice, key="secret") == []
    with connected(web.url, alice) as client:
        answer = client.sio.call("subscribe", {"user": "bob", "key": "secret"}, timeout=10)
        assert answer == {"ok": False,
                          "error": "forbidden: you may subscribe only to your own keys"}
    assert every_page(web, bob) == ["bob-1"]


@pytest.mark.parametrize("role", ["viewer", "admin"])
def test_viewers_and_admins_read_anyone(web, storage, role):
    reader = web.token(f"the-{role}", role=role)
    web.token("bob")
    storage.write([stored("bob", 1, key="k", value=2.0)])
    assert every_page(web, reader, user="bob") == ["bob-1"]
    assert get(web, "/api/users/bob/stats", reader).json()["messages"] == 1
    assert get(web, "/api/users/bob/keys/k/stats", reader).json()["values"]["sum"] == 2.0
    totals = get(web, "/api/stats", reader)
    assert totals.status_code == 200 and totals.json()["messages_stored"] == 1


def test_aggregates_read_back_per_user_and_per_key(web, storage, mysql_backend):
    token = web.token("alice")
    storage.write([stored("alice", n, key=("t", "h/1", None)[n % 3], value=n * 1.5)
                   for n in range(30)])
    assert stats_mismatches(mysql_backend.db) == []
    user = get(web, "/api/users/alice/stats", token).json()
    assert user["messages"] == 30 and user["values"]["count"] == 30
    assert user["values"]["sum"] == pytest.approx(sum(n * 1.5 for n in range(30)))
    assert (user["backlog"], user["pending"], user["paused"]) == (0, 0, False)
    key = get(web, "/api/users/alice/keys/h/1/stats", token).json()
    assert (key["key"], key["messages"], key["values"]["max"]) == ("h/1", 10, 28 * 1.5)
    assert key["first_seen"] == iso(1)


def test_refusals_are_json_naming_what_is_wrong(web, storage):
    token = web.token("alice")
    cases = {"limit=0": ({"limit": 0}, "limit"), "limit=5000": ({"limit": 5000}, "limit"),
             "since": ({"since": "yesterday"}, "since"),
             "until": ({"until": "2026-02-30T00:00:00Z"}, "until"),
             "order": ({"order": "random"}, "order"), "user": ({"user": "a b"}, "user"),
             "msg_id": ({"msg_id": "has space"}, "msg_id")}
    for case, (params, field) in cases.items():
        answer = get(web, "/api/messages", token, **params)
        assert answer.status_code == 422, case
        assert answer.json()["field"] == field and answer.json()["error"].startswith(
            f"{field}: "), (case, answer.json())
    bad_cursor = get(web, "/api/messages", token, cursor="not-a-cursor")
    assert (bad_cursor.status_code, bad_cursor.json()["error"]) == (
        400, "cursor: is not a cursor from an earlier page")
    assert get(web, "/api/users/nobody/stats", make_jwt("nobody", role="admin")).status_code \
        == 401  # a token of no account
    admin = web.token("root", role="admin")
    missing = get(web, "/api/users/nobody/stats", admin)
    assert (missing.status_code, missing.json()) == (404, {"error": "not found: no user nobody"})
    assert get(web, "/api/users/alice/keys/none/stats", token).status_code == 404
    unauthenticated = requests.get(f"{web.url}/api/messages", timeout=10)
    assert (unauthenticated.status_code, unauthenticated.json()) == (
        401, {"error": "missing token"})


def test_live_aggregates_reach_the_subscribers_of_a_key(mysql_backend, start_web,
                                                         start_engine):
    web = start_web(mysql_backend)
    start_engine(mysql_backend)
    token = web.token("alice")
    with connected(web.url, token) as client, connected(web.url, token) as other:
        updates: list[dict] = []
        client.sio.on("stats", updates.append)
        other_updates: list[dict] = []
        other.sio.on("stats", other_updates.append)
        answer = client.sio.call("subscribe", {"key": "temperature"}, timeout=10)
        assert answer == {"ok": True, "key": "temperature", "stats": None}
        for n, value in enumerate((20.5, 21.5, 23.0)):
            assert client.call({"msg_id": f"t{n}", "message": "x", "key": "temperature",
                                "value": value})["ok"]
        assert client.call({"msg_id": "h", "message": "x", "key": "humidity",
                            "value": 40})["ok"]
        wait_until(lambda: updates and updates[-1]["messages"] == 3, 15,
                   what="the aggregates of temperature after the commit")
        latest = updates[-1]
        assert (latest["user"], latest["key"], latest["values"]["sum"]) == (
            "alice", "temperature", 65.0)
        assert {u["key"] for u in updates} == {"temperature"}  # not humidity
        assert other_updates == []  # only the subscribed connection
        resubscribed = other.sio.call("subscribe", {"key": "temperature"}, timeout=10)
        assert resubscribed["stats"]["messages"] == 3
        assert client.sio.call("unsubscribe", {"key": "temperature"}, timeout=10)["ok"]


def test_the_openapi_document_and_its_page_are_served_locally(web):
    document = requests.get(f"{web.url}/api/openapi.json", timeout=10)
    assert document.status_code == 200
    spec = document.json()
    assert spec["openapi"].startswith("3.")
    for path in ("/api/messages", "/api/stats", "/api/users/{user_id}/stats",
                 "/api/users/{user_id}/keys/{key}/stats", "/api/auth/login"):
        assert path in spec["paths"], path
    assert {"get", "post"} <= set(spec["paths"]["/api/messages"])
    parameters = {p["name"] for p in spec["paths"]["/api/messages"]["get"]["parameters"]}
    assert {"user", "since", "until", "key", "msg_id", "cursor", "limit"} <= parameters
    page = requests.get(f"{web.url}/api/docs", timeout=10)
    assert page.status_code == 200 and "/api/openapi.json" in page.text
    assert "https://" not in page.text and "http://" not in page.text
    script = requests.get(f"{web.url}/static/vendor/redoc/redoc.standalone.js", timeout=10)
    assert script.status_code == 200 and len(script.content) > 100_000
