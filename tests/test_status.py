"""The `status` event: a client learns the fate of its accepted messages (stored, dead or
pending) from the database, never anything about another user's."""

from __future__ import annotations

import datetime as dt

import pytest

from engine.schema import dead_letters, messages
from tests.gateway_support import connected
from webapp.status import MAX_STATUS_IDS, message_status

NOW = dt.datetime(2026, 12, 1, 12, 0, 0)


def store(db, user: str, msg_id: str, stream_id: str) -> None:
    with db.begin() as conn:
        conn.execute(messages.insert().values(
            user_id=user, msg_id=msg_id, message="hello", timestamp=NOW, received_at=NOW,
            stream_id=stream_id, committed_at=NOW))


def bury(db, user: str, msg_id: str, stream_id: str, error: str, replayed: bool = False) -> None:
    with db.begin() as conn:
        conn.execute(dead_letters.insert().values(
            user_id=user, stream_id=stream_id, msg_id=msg_id, payload="{}", error=error,
            attempts=5, created_at=NOW, replayed_at=NOW if replayed else None))


@pytest.fixture
def two_users(backend):
    store(backend.db, "alice", "a-stored", "1-0")
    bury(backend.db, "alice", "a-dead", "2-0", "Data too long for column 'key'")
    bury(backend.db, "alice", "a-replayed", "3-0", "was dead", replayed=True)
    store(backend.db, "bob", "b-stored", "4-0")
    bury(backend.db, "bob", "b-dead", "5-0", "bob's secret error")
    return backend


def test_each_msg_id_is_stored_dead_or_pending_in_the_order_asked(two_users):
    asked = ["a-pending", "a-dead", "a-stored", "a-replayed", "a-stored"]
    assert message_status(two_users.db, "alice", asked) == [
        {"msg_id": "a-pending", "status": "pending"},
        {"msg_id": "a-dead", "status": "dead", "error": "Data too long for column 'key'"},
        {"msg_id": "a-stored", "status": "stored", "id": "1-0"},
        {"msg_id": "a-replayed", "status": "pending"},  # back in its stream
        {"msg_id": "a-stored", "status": "stored", "id": "1-0"},
    ]


def test_a_stored_message_that_was_once_dead_is_stored(two_users):
    store(two_users.db, "alice", "a-dead", "9-0")  # replayed and written since
    assert message_status(two_users.db, "alice", ["a-dead"]) == [
        {"msg_id": "a-dead", "status": "stored", "id": "9-0"}]


def test_another_users_messages_look_like_messages_that_do_not_exist(two_users):
    assert message_status(two_users.db, "alice", ["b-stored", "b-dead"]) == [
        {"msg_id": "b-stored", "status": "pending"}, {"msg_id": "b-dead", "status": "pending"}]
    assert message_status(two_users.db, "bob", ["a-stored", "b-dead"]) == [
        {"msg_id": "a-stored", "status": "pending"},
        {"msg_id": "b-dead", "status": "dead", "error": "bob's secret error"}]


def test_a_connected_client_asks_over_socketio_about_its_own_messages(
        mysql_backend, start_web):
    store(mysql_backend.db, "alice", "a-stored", "1-0")
    bury(mysql_backend.db, "alice", "a-dead", "2-0", "refused")
    store(mysql_backend.db, "bob", "b-stored", "4-0")
    web = start_web(mysql_backend)
    with connected(web.url, web.token("alice")) as alice:
        answer = alice.sio.call("status", {"msg_ids": ["a-stored", "a-dead", "b-stored"]},
                                timeout=10)
    assert answer == {"ok": True, "results": [
        {"msg_id": "a-stored", "status": "stored", "id": "1-0"},
        {"msg_id": "a-dead", "status": "dead", "error": "refused"},
        {"msg_id": "b-stored", "status": "pending"}]}
    with connected(web.url, web.token("bob")) as bob:
        answer = bob.sio.call("status", {"msg_ids": ["a-stored", "b-stored"]}, timeout=10)
    assert answer["results"] == [{"msg_id": "a-stored", "status": "pending"},
                                 {"msg_id": "b-stored", "status": "stored", "id": "4-0"}]


LIST = f"msg_ids: must be a list of 1 to {MAX_STATUS_IDS} msg_ids"
EACH = "msg_ids: each must be 1-64 characters from A-Z a-z 0-9 _ . : -"
MALFORMED = [(None, LIST), (["a"], LIST), ({"msg_ids": []}, LIST),
             ({"msg_ids": [f"m{n}" for n in range(MAX_STATUS_IDS + 1)]}, LIST),
             ({"msg_ids": ["ok", "not ok!"]}, EACH), ({"msg_ids": [5]}, EACH)]


def test_a_malformed_question_gets_a_clear_refusal_and_the_connection_goes_on(
        mysql_backend, start_web):
    web = start_web(mysql_backend)
    with connected(web.url, web.token("alice")) as alice:
        for question, error in MALFORMED:
            assert alice.sio.call("status", question, timeout=10) == {"ok": False,
                                                                      "error": error}
        assert alice.sio.call("status", {"msg_ids": ["x"]}, timeout=10)["ok"] is True
