"""A client emitting an event named like a lifecycle event (`disconnect`, `connect`…), or an
event whose name is not a string at all, is refused: it never runs the server's own handlers,
its connection stays counted in Redis, and the refusal is one warning line per connection."""

from __future__ import annotations

import json

import pytest

from engine import keys
from tests.conftest import wait_until
from tests.gateway_support import msg_ids
from tests.hostile.support import assert_no_errors_logged, joined_session, lines_with

#: The event names socket.io reserves (socket.io-parser's RESERVED_EVENTS), and names that are
#: no names at all: as JSON, the first element of an EVENT packet's array.
RESERVED = ['"connect"', '"disconnect"', '"connect_error"', '"disconnecting"',
            '"newListener"', '"removeListener"']
NOT_NAMES = ['""', "1", "null", "true", "[]", '{"a":1}']


def ack_of(packet: str, ack_id: int) -> object:
    """The answer in a socket.io ACK packet `3<id>[answer]`."""
    prefix = f"3{ack_id}"
    assert packet.startswith(prefix), packet
    return json.loads(packet[len(prefix):])[0]


def next_message(session) -> str:
    """The next socket.io packet the server sent (an engine.io MESSAGE), whatever the
    transport."""
    packet = session.receive()
    assert packet is not None, "the server closed the connection"
    assert packet.startswith("4"), packet
    return packet[1:]


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_reserved_or_nameless_events_are_refused_and_the_connection_stays_counted(
        mysql_backend, start_web, transport):
    web = start_web(mysql_backend)
    redis = mysql_backend.redis
    with joined_session(web, transport, "mallory") as session:
        wait_until(lambda: redis.hlen(keys.connections("mallory")) == 1, 5,
                   what="mallory's connection to be counted")
        for number, name in enumerate(RESERVED + NOT_NAMES, start=1):
            session.send(f"42{number}[{name},{{\"msg_id\":\"x\",\"message\":\"x\"}}]")
            answer = ack_of(next_message(session), number)
            assert answer["ok"] is False, (name, answer)
            assert answer["error"].startswith("event: "), answer
            assert redis.hlen(keys.connections("mallory")) == 1, name

        # Without an ack id, the refusal comes as an `error` event.
        session.send('42["disconnect","bye"]')
        event = next_message(session)
        assert event.startswith("2"), event
        assert json.loads(event[1:])[0] == "error" and json.loads(event[1:])[1]["ok"] is False

        # Still connected, still counted, still able to send.
        session.send('421000["data",{"msg_id":"after","message":"still here"}]')
        assert ack_of(next_message(session), 1000)["ok"] is True
        assert redis.hlen(keys.connections("mallory")) == 1
    wait_until(lambda: redis.hlen(keys.connections("mallory")) == 0, 5,
               what="mallory's connection to be counted out once it really closed")
    assert msg_ids(redis, "mallory") == ["after"]

    refusals = lines_with(web, "reserved or invalid event name")
    assert len(refusals) == 1, refusals  # one per offending connection
    assert "mallory" in refusals[0] and " WARNING " in refusals[0]
    assert_no_errors_logged(web)


def test_the_reserved_name_refusal_is_said_plainly(mysql_backend, start_web):
    web = start_web(mysql_backend)
    with joined_session(web, "websocket", "mallory") as session:
        session.send('427["disconnect"]')
        assert ack_of(next_message(session), 7) == {
            "ok": False, "error": 'event: "disconnect" is a reserved name'}
        session.send('428[5]')
        assert ack_of(next_message(session), 8) == {
            "ok": False, "error": "event: the name must be a non-empty string"}
