"""The fate of a user's messages, by msg_id: the socket.io event `status`.

A client hears `committed` receipts only while it is connected, so a receipt sent while its
connection was down is missed for good. A client that holds messages the server accepted but
whose receipt it never heard asks here instead (`tributary.js` does after every reconnect, and
for any receipt that is late):

    emit("status", {msg_ids: ["m-1", "m-2", "m-3"]}, ack)
    → {ok: true, results: [{msg_id: "m-1", status: "stored", id: "1764…-0"},
                           {msg_id: "m-2", status: "dead", error: "…"},
                           {msg_id: "m-3", status: "pending"}]}

- "stored": the row is in `messages` (`id` is the stream entry it was written from);
- "dead": it is in `dead_letters`, not replayed, with the error that put it there;
- "pending": neither yet. For a message the server acknowledged, that means it is still in
  its user's stream; for one it never acknowledged, it may also never have arrived.

Only the connected user's own messages are looked at: another user's msg_id is "pending" to
them, exactly as one that does not exist. The question runs in the connection's reader (two
indexed queries), never on the `data` path.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from flask import request

from engine.messages import MSG_ID_PATTERN
from engine.schema import dead_letters, messages
from webapp.extensions import services, socketio

log = logging.getLogger(__name__)

#: Most msg_ids in one question.
MAX_STATUS_IDS = 1000

STORED, DEAD, PENDING = "stored", "dead", "pending"


def message_status(db: sa.engine.Engine, user_id: str,
                   msg_ids: Sequence[str]) -> list[dict[str, Any]]:
    """One answer per msg_id, in the order asked, about `user_id`'s messages only."""
    wanted = list(dict.fromkeys(msg_ids))
    with db.connect() as conn:
        stored = dict(conn.execute(
            sa.select(messages.c.msg_id, messages.c.stream_id)
            .where(messages.c.user_id == user_id, messages.c.msg_id.in_(wanted))).all())
        dead = dict(conn.execute(
            sa.select(dead_letters.c.msg_id, dead_letters.c.error)
            .where(dead_letters.c.user_id == user_id, dead_letters.c.msg_id.in_(wanted),
                   dead_letters.c.replayed_at.is_(None))
            .order_by(dead_letters.c.id)).all())
    results: list[dict[str, Any]] = []
    for msg_id in msg_ids:
        if msg_id in stored:
            results.append({"msg_id": msg_id, "status": STORED, "id": stored[msg_id]})
        elif msg_id in dead:
            results.append({"msg_id": msg_id, "status": DEAD, "error": dead[msg_id]})
        else:
            results.append({"msg_id": msg_id, "status": PENDING})
    return results


def check_question(question: Any) -> list[str]:
    """The msg_ids of a `status` question; ValueError saying what is wrong with it."""
    msg_ids = question.get("msg_ids") if isinstance(question, dict) else None
    if not isinstance(msg_ids, list) or not 1 <= len(msg_ids) <= MAX_STATUS_IDS:
        raise ValueError(f"msg_ids: must be a list of 1 to {MAX_STATUS_IDS} msg_ids")
    for msg_id in msg_ids:
        if not isinstance(msg_id, str) or not MSG_ID_PATTERN.fullmatch(msg_id):
            raise ValueError("msg_ids: each must be 1-64 characters from A-Z a-z 0-9 _ . : -")
    return msg_ids


@socketio.on("status")
def on_status(question: Any = None) -> dict[str, Any]:
    user_id = services().gateway.users.get(request.sid)  # type: ignore[attr-defined]
    if user_id is None:
        return {"ok": False, "error": "not connected"}
    try:
        msg_ids = check_question(question)
    except ValueError as exc:
        return {"ok": False, "error": str(exc)}
    try:
        results = message_status(services().db, user_id, msg_ids)
    except sa.exc.SQLAlchemyError as exc:
        log.warning("status of %d messages of %s: database unavailable (%s)", len(msg_ids),
                    user_id, exc.__class__.__name__)
        return {"ok": False, "error": "unavailable"}
    return {"ok": True, "results": results}
