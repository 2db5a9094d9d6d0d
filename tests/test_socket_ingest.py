"""The socket.io `data` event, as a contract on both backends (Redis 7 + MariaDB, and the
embedded Redis 6.2 + SQLite): what a client is told, and what is then in its stream."""

from __future__ import annotations

import datetime as dt
import os

from engine import keys
from tests.conftest import wait_until
from tests.engine_support import is_registered
from tests.gateway_support import connect, connected, entries, msg_ids
from webapp.realtime.rooms import RedisManager

#: These contract tests run on Redis Cluster too (see conftest.pytest_generate_tests).
CLUSTER_CONTRACT = True

OVERRIDE_WARNING = "user_id: replaced by the authenticated user"


def connections(backend, user_id: str) -> int:
    return sum(int(count) for count in backend.redis.hvals(keys.connections(user_id)))


def test_a_connection_opens_the_queue_joins_the_users_room_and_is_counted_out(backend,
                                                                             start_web):
    web = start_web(backend)
    # The web process's own manager class: python-socketio's does not know redis+cluster://.
    emitter = RedisManager(backend.redis_url, write_only=True,
                           channel=f"tributary-test-{os.getpid()}")
    alice = connect(web.url, web.token("alice"))
    assert backend.redis.type(keys.stream("alice")) == "stream"
    groups = backend.redis.xinfo_groups(keys.stream("alice"))
    assert [group["name"] for group in groups] == [keys.GROUP]
    assert is_registered(backend.redis, "alice")
    assert connections(backend, "alice") == 1

    with connected(web.url, web.token("alice")) as second, \
            connected(web.url, web.token("bob")) as bob:
        assert connections(backend, "alice") == 2
        emitter.emit("notice", {"for": "alice"}, room=keys.user_room("alice"), namespace="/")
        emitter.emit("notice", {"for": "bob"}, room=keys.user_room("bob"), namespace="/")
        wait_until(lambda: alice.received("notice") and second.received("notice")
                   and bob.received("notice"), 5, what="the emits to the users' rooms")
        assert alice.received("notice") == second.received("notice") == [{"for": "alice"}]
        assert bob.received("notice") == [{"for": "bob"}]

    wait_until(lambda: connections(backend, "alice") == 1, 5,
               what="alice's second connection to be counted out")
    assert backend.redis.zscore(keys.closing_of("alice"), "alice") is None
    alice.close()
    wait_until(lambda: backend.redis.zscore(keys.closing_of("alice"), "alice") is not None, 5,
               what="alice in the closing set after her last disconnect")
    assert connections(backend, "alice") == 0


def test_a_connection_gives_an_existing_stream_its_lost_group_back_reading_from_the_start(
        backend, start_web):
    web = start_web(backend)
    with connected(web.url, web.token("alice")) as client:
        ack = client.call({"msg_id": "m-1", "message": "before the group was lost"})
        assert ack["ok"] is True, ack
    backend.redis.xgroup_destroy(keys.stream("alice"), keys.GROUP)
    assert backend.redis.xinfo_groups(keys.stream("alice")) == []

    with connected(web.url, web.token("alice")):
        [group] = backend.redis.xinfo_groups(keys.stream("alice"))
        assert (group["name"], group["pending"], group["last-delivered-id"]) \
            == (keys.GROUP, 0, "0-0")
        assert [entry_id for entry_id, _ in entries(backend.redis, "alice")] == [ack["id"]]


def test_a_message_is_acked_with_its_entry_id_once_it_is_in_the_stream(backend, start_web):
    web = start_web(backend)
    with connected(web.url, web.token("alice")) as client:
        ack = client.call({"msg_id": "m-1", "message": "hello", "user_id": "alice",
                           "timestamp": "2026-11-26T12:00:00+02:00", "value": 2.5,
                           "key": "temp"})
        assert ack == {"ok": True, "id": ack["id"], "msg_id": "m-1"}
        assert entries(backend.redis, "alice") == [
            (ack["id"], {"msg_id": "m-1", "message": "hello",
                         "timestamp": "2026-11-26T10:00:00.000Z", "value": 2.5,
                         "key": "temp"})]

        before = dt.datetime.now(dt.UTC).replace(microsecond=0)
        filled = client.call({"message": "no id, no time"})
        after = dt.datetime.now(dt.UTC)
    assert filled["ok"] is True and len(filled["msg_id"]) == 32
    [_, (entry_id, message)] = entries(backend.redis, "alice")
    assert (entry_id, message["msg_id"]) == (filled["id"], filled["msg_id"])
    assert message["timestamp"].endswith("Z")
    assert before <= dt.datetime.fromisoformat(message["timestamp"]) <= after


def test_messages_sent_without_waiting_for_acks_are_written_in_the_order_sent(backend,
                                                                              start_web):
    web = start_web(backend, RATE_BURST=1000)
    token = web.token("alice")
    acks: dict[str, dict] = {}
    with connected(web.url, token) as first, connected(web.url, token) as second:
        for n in range(60):
            for client, name in ((first, "a"), (second, "b")):
                msg_id = f"{name}-{n:02d}"
                client.sio.emit("data", {"msg_id": msg_id, "message": "x"},
                                callback=lambda ack, msg_id=msg_id: acks.__setitem__(msg_id, ack))
        wait_until(lambda: len(acks) == 120, 10, what="every ack")
    assert all(ack["ok"] and ack["msg_id"] == msg_id for msg_id, ack in acks.items()), acks
    written = entries(backend.redis, "alice")
    assert sorted(entry_id for entry_id, _ in written) == sorted(a["id"] for a in acks.values())
    for name in ("a", "b"):
        sent = [f"{name}-{n:02d}" for n in range(60)]
        assert [m["msg_id"] for _, m in written if m["msg_id"].startswith(name)] == sent


def test_a_payload_user_id_of_another_user_is_overridden_and_the_ack_says_so(backend,
                                                                            start_web):
    web = start_web(backend)
    web.token("bob")
    with connected(web.url, web.token("alice")) as client:
        ack = client.call({"msg_id": "m-1", "message": "hello", "user_id": "bob"})
        assert ack == {"ok": True, "id": ack["id"], "msg_id": "m-1", "user_id": "alice",
                       "warning": OVERRIDE_WARNING}
    assert msg_ids(backend.redis, "alice") == ["m-1"]
    assert not backend.redis.exists(keys.stream("bob"))


INVALID = [
    ({"msg_id": "has space", "message": "x"}, "msg_id: "),
    ({"msg_id": "x" * 65, "message": "x"}, "msg_id: "),
    ({"msg_id": 1.5, "message": "x"}, "msg_id: "),
    ({"msg_id": "m"}, "message: is required"),
    ({"message": 42}, "message: must be a string"),
    ({"message": "é" * 33}, "message: is 66 bytes, more than the 64 allowed"),
    ({"message": "lone \ud800"}, "message: is not valid UTF-8 text"),
    ({"message": "x", "timestamp": "next tuesday"}, "timestamp: must be an ISO-8601"),
    ({"message": "x", "timestamp": 1764151200}, "timestamp: must be an ISO-8601"),
    ({"message": "x", "timestamp": "0001-01-01T00:00:00+01:00"}, "timestamp: is out of range"),
    ({"message": "x", "value": True}, "value: must be a number"),
    ({"message": "x", "value": "5"}, "value: must be a number"),
    ({"message": "x", "value": float("nan")}, "value: must be a finite number"),
    ({"message": "x", "value": float("inf")}, "value: must be a finite number"),
    ({"message": "x", "value": 10**400}, "value: must be between -2^53 and 2^53"),
    ({"message": "x", "value": 1e308}, "value: must be between -2^53 and 2^53"),
    ({"message": "x", "vaule": 1}, "vaule: unknown field"),
    ({"message": "x", "key": "k" * 256}, "key: must be a string"),
    ({"message": "x", "key": 7}, "key: must be a string"),
    ("just text", "payload: must be a JSON object"),
    (7, "payload: must be a JSON object"),
    (None, "payload: must be a JSON object"),
]


def test_every_invalid_message_is_refused_naming_its_field_and_nothing_is_written(backend,
                                                                                  start_web):
    web = start_web(backend, MAX_MESSAGE_BYTES=64)
    with connected(web.url, web.token("alice")) as client:
        for payload, error in INVALID:
            ack = client.call(payload)
            assert ack["ok"] is False and ack["error"].startswith(error), (payload, ack)
        two_arguments = client.sio.call("data", ({"message": "x"}, {"message": "y"}), timeout=10)
        assert two_arguments == {"ok": False, "error": "payload: must be one argument, a message "
                                                       "or an array of them"}
        assert client.call({"msg_id": "ok-1", "message": "é" * 32})["ok"] is True
    assert msg_ids(backend.redis, "alice") == ["ok-1"]


def test_an_array_is_acked_item_by_item_and_an_empty_or_oversized_one_is_refused(backend,
                                                                                start_web):
    web = start_web(backend, MAX_BATCH_ITEMS=5)
    with connected(web.url, web.token("alice")) as client:
        acks = client.call([{"msg_id": "a", "message": "1"},
                            {"msg_id": "b", "message": 2},
                            {"msg_id": "c", "message": "3"},
                            "not an object",
                            {"msg_id": "e", "message": "5"}])
        refusal = {"ok": False, "error": "payload: must hold 1 to 5 messages"}
        assert client.call([]) == refusal
        assert client.call([{"message": str(n)} for n in range(6)]) == refusal
    assert [ack["ok"] for ack in acks] == [True, False, True, False, True]
    assert acks[1] == {"ok": False, "error": "message: must be a string", "msg_id": "b"}
    assert acks[3] == {"ok": False, "error": "payload: must be a JSON object"}
    assert [entry_id for entry_id, _ in entries(backend.redis, "alice")] == [
        acks[0]["id"], acks[2]["id"], acks[4]["id"]]
    assert msg_ids(backend.redis, "alice") == ["a", "c", "e"]


def test_a_client_without_an_ack_callback_gets_refusals_as_error_events(backend, start_web):
    web = start_web(backend)
    with connected(web.url, web.token("alice")) as client:
        client.send({"msg_id": "bad", "message": 5})
        client.send([{"msg_id": "good", "message": "fine"}, {"msg_id": "bad-2", "value": 1}])
        client.send({"msg_id": "good-2", "message": "fine"})
        wait_until(lambda: len(client.received("error")) >= 2, 5, what="two error events")
        wait_until(lambda: len(entries(backend.redis, "alice")) == 2, 5,
                   what="the two valid messages in the stream")
        assert client.call({"msg_id": "last", "message": "x"})["ok"] is True
        assert client.received("error") == [
            {"ok": False, "error": "message: must be a string", "msg_id": "bad"},
            {"ok": False, "error": "message: is required", "msg_id": "bad-2"}]
    assert msg_ids(backend.redis, "alice") == ["good", "good-2", "last"]


def test_a_msg_id_resent_after_a_reconnect_is_accepted(backend, start_web):
    web = start_web(backend)
    token = web.token("alice")
    with connected(web.url, token) as client:
        first = client.call({"msg_id": "again", "message": "x"})
    with connected(web.url, token) as client:
        second = client.call({"msg_id": "again", "message": "x"})
    assert first["ok"] and second["ok"] and first["id"] != second["id"]
    assert msg_ids(backend.redis, "alice") == ["again", "again"]
