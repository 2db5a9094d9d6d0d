"""Receipts: a connected socket.io client hears `committed` for its own messages, once their rows
are committed, through the web process the engine shares a message queue with."""

from __future__ import annotations

import threading

import socketio
import sqlalchemy as sa

from engine.schema import messages
from tests.conftest import wait_until
from tests.engine_support import payload


def committed_msg_ids(db, user: str) -> set[str]:
    with db.connect() as conn:
        return set(conn.execute(sa.select(messages.c.msg_id)
                                .where(messages.c.user_id == user)).scalars())


def test_a_connected_client_gets_committed_receipts_after_the_commit(backend, start_web,
                                                                    start_engine):
    web = start_web(backend)
    start_engine(backend, MAX_BATCH_AGE=0.3)
    receipts: list[dict] = []
    seen_in_database: list[bool] = []
    lock = threading.Lock()

    def on_committed(receipt: dict) -> None:
        # At the moment the receipt arrives, its rows must already be in the database.
        in_db = set(receipt["msg_ids"]) <= committed_msg_ids(backend.db, "alice")
        with lock:
            receipts.append(receipt)
            seen_in_database.append(in_db)

    alice, bob = socketio.Client(), socketio.Client()
    alice.on("committed", on_committed)
    bob_receipts: list[dict] = []
    bob.on("committed", bob_receipts.append)
    alice.connect(web.url, auth={"token": web.token("alice")}, transports=["websocket"])
    bob.connect(web.url, auth={"token": web.token("bob")}, transports=["websocket"])
    try:
        acks = [alice.call("data", payload(f"a{n}", value=float(n))) for n in range(6)]
        assert all(ack["ok"] for ack in acks), acks
        entry_of = {ack["msg_id"]: ack["id"] for ack in acks}
        bob_ack = bob.call("data", payload("b0"))

        def all_receipted() -> bool:
            with lock:
                return sorted(m for r in receipts for m in r["msg_ids"]) == sorted(entry_of)

        wait_until(all_receipted, 15, what="receipts for all six messages")
        wait_until(lambda: bob_receipts, 10, what="bob's receipt")
    finally:
        alice.disconnect()
        bob.disconnect()

    assert all(seen_in_database)
    for receipt in receipts:
        assert set(receipt) == {"msg_ids", "count", "last_id"}
        assert receipt["count"] == len(receipt["msg_ids"])
        # last_id is the stream entry of the receipt's last message, in stream order.
        assert receipt["last_id"] == entry_of[receipt["msg_ids"][-1]]
        assert receipt["msg_ids"] == sorted(receipt["msg_ids"], key=lambda m: int(m[1:]))
    # Each user hears about their own messages only.
    assert [r["msg_ids"] for r in bob_receipts] == [["b0"]]
    assert bob_receipts[0]["last_id"] == bob_ack["id"]
