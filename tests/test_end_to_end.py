"""The whole path on each backend: a socket.io client's message reaches the database."""

from __future__ import annotations

import socketio
import sqlalchemy as sa

from engine.schema import messages
from tests.conftest import wait_until


def test_a_message_sent_over_socketio_lands_in_the_database_once(backend, start_web,
                                                                  start_engine):
    web = start_web(backend)
    start_engine(backend)
    client = socketio.Client()
    committed = []
    client.on("committed", committed.append)
    client.connect(web.url, auth={"token": web.token("alice")}, transports=["websocket"])
    try:
        ack = client.call("data", {"msg_id": "m-1", "message": "hello", "user_id": "alice",
                                   "timestamp": "2026-11-26T10:00:00.000Z", "value": 2.5})
        assert ack["ok"] is True and ack["msg_id"] == "m-1" and "-" in ack["id"]

        def rows():
            with backend.db.connect() as conn:
                return conn.execute(sa.select(messages.c.user_id, messages.c.msg_id,
                                              messages.c.message, messages.c.value,
                                              messages.c.stream_id)).all()

        written = wait_until(rows, 15, what="the row in the database")
        assert [tuple(r) for r in written] == [("alice", "m-1", "hello", 2.5, ack["id"])]
        wait_until(lambda: committed, 10, what="the committed receipt")
        assert committed[0]["msg_ids"] == ["m-1"] and committed[0]["last_id"] == ack["id"]
    finally:
        client.disconnect()
