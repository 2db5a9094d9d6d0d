"""socket.io events: authenticated connections and the `data` ingest event.

`connect` and `disconnect` go through Flask-SocketIO (they need the request and run once per
connection). The per-message `data` event is registered directly on the python-socketio server:
it needs no Flask context, and skipping the per-event app and request contexts is what keeps the
hot path lean.

A client sending `data` with an ack callback gets its answer there. One sending without a
callback (the seed client does) gets refusals as `error` events instead.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

from flask import request
from flask_socketio import ConnectionRefusedError, join_room

from engine import keys
from engine.errors import UnavailableError
from webapp.auth import AuthError, authenticate_token
from webapp.extensions import services, socketio
from webapp.gateway import Gateway
from webapp.ingest import UNAVAILABLE, ingest

log = logging.getLogger(__name__)

#: Whether the client asked for an ack on the event being handled (set and read in the same
#: greenlet: events run in their connection's reader, one after the other).
_wants_ack: ContextVar[bool] = ContextVar("wants_ack", default=True)


def token_from_request(auth: Any) -> str | None:
    """The access token of a connecting client: `auth: {token}`, `?token=`, or a Bearer header."""
    if isinstance(auth, dict) and auth.get("token"):
        return str(auth["token"])
    if request.args.get("token"):
        return request.args["token"]
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None


@socketio.on("connect")
def on_connect(auth: Any = None) -> None:
    try:
        user = authenticate_token(token_from_request(auth))
        services().gateway.connected(request.sid, user.username)  # type: ignore[attr-defined]
    except AuthError as exc:
        log.info("connection refused (%s) from %s", exc, request.remote_addr)
        raise ConnectionRefusedError(str(exc)) from None
    except UnavailableError as exc:
        services().gateway.redis_failed(exc)  # logged once per outage, not per connection
        log.debug("connection refused: Redis unavailable")
        raise ConnectionRefusedError(UNAVAILABLE) from None
    join_room(keys.user_room(user.username))
    log.debug("user %s connected as %s", user.username, request.sid)  # type: ignore


@socketio.on("disconnect")
def on_disconnect(reason: Any = None) -> None:
    services().gateway.disconnected(request.sid)  # type: ignore[attr-defined]


def install_data_handler(gateway: Gateway) -> None:
    """Register the `data` event on the raw python-socketio server of `socketio`."""
    server = socketio.server
    max_items = gateway.settings.MAX_BATCH_ITEMS

    def on_data(sid: str, payload: Any = None, *extra: Any) -> Any:
        user_id = gateway.users.get(sid)
        if user_id is None:
            return _refuse(sid, "not connected")
        if extra:
            return _refuse(sid, "payload: must be one argument, a message or an array of them")
        try:
            if isinstance(payload, list):
                if not payload or len(payload) > max_items:
                    return _refuse(sid, f"payload: must hold 1 to {max_items} messages")
                answers = ingest(gateway, user_id, gateway.socket_limits, payload)
                return _answer(sid, answers, *answers)
            answer = ingest(gateway, user_id, gateway.socket_limits, [payload])[0]
            return _answer(sid, answer, answer)
        except Exception:
            # Every message gets an answer, even one that trips over a bug.
            log.exception("data from %s could not be handled", user_id)
            return _refuse(sid, "internal error")

    def _refuse(sid: str, error: str) -> Any:
        answer = {"ok": False, "error": error}
        return _answer(sid, answer, answer)

    def _answer(sid: str, ack: Any, *answers: dict) -> Any:
        if not _wants_ack.get():
            for answer in answers:
                if not answer["ok"]:
                    server.emit("error", answer, to=sid, ignore_queue=True)
        return ack

    server.on("data", on_data, namespace="/")

    # python-socketio does not tell a handler whether the client wants an ack; record it for
    # the handler, which runs next in the same greenlet.
    dispatch = server._handle_event_internal

    def handle_event(srv: Any, sid: str, eio_sid: str, data: Any, namespace: str,
                     ack_id: Any) -> Any:
        _wants_ack.set(ack_id is not None)
        return dispatch(srv, sid, eio_sid, data, namespace, ack_id)

    server._handle_event_internal = handle_event
