"""socket.io events: authenticated connections and the `data` ingest event.

`connect` and `disconnect` go through Flask-SocketIO (they need the request and run once per
connection). The per-message `data` event is registered directly on the python-socketio server:
it needs no Flask context, and skipping the per-event app and request contexts is what keeps the
hot path lean. It is answered once Redis has the messages, from the gateway's flusher.

A client sending `data` with an ack callback gets its answer there. One sending without a
callback (the seed client does) gets refusals as `error` events instead.

A connection without a token that carries the operator dashboard's session cookie is the
dashboard's own (webapp/admin/live.py): it joins the room `dashboard` and nothing else, and
its `data` is refused as from any connection the gateway does not know.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import request
from flask_socketio import ConnectionRefusedError, join_room
from structlog.contextvars import bind_contextvars

from engine import keys
from engine.errors import AuthError, RedisUnavailable
from webapp import offenders, subscriptions
from webapp.admin import live
from webapp.auth import admit_connection
from webapp.extensions import services, socketio
from webapp.gateway import Gateway
from webapp.ingest import UNAVAILABLE, submit
from webapp.jsonmod import dumpb
from webapp.metrics import connect_refused
from webapp.realtime.internals import EventRunner, send_encoded
from webapp.revocation import Token

log = logging.getLogger(__name__)


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
    token = token_from_request(auth)
    if live.wants_dashboard(token):  # the operator dashboard, signed in by its cookie
        return live.connect_dashboard(request.sid)  # type: ignore[attr-defined]
    try:
        user, claims = admit_connection(token, request.sid)  # type: ignore[attr-defined]
    except AuthError as exc:
        # Rate-limited: a client may send bad tokens as fast as it likes.
        offenders.warn(log, None, "connection refused (%s) from %s", exc, request.remote_addr,
                       level=logging.INFO)
        connect_refused(services().gateway, str(exc))
        raise ConnectionRefusedError(str(exc)) from None
    except RedisUnavailable as exc:
        services().gateway.redis_failed(exc)  # logged once per outage, not per connection
        log.debug("connection refused: Redis unavailable")
        connect_refused(services().gateway, UNAVAILABLE)
        raise ConnectionRefusedError(UNAVAILABLE) from None
    bind_contextvars(user=user.username)  # this connection's log lines name its user
    join_room(keys.user_room(user.username))
    services().tokens.add(request.sid, Token(  # type: ignore[attr-defined]
        user.username, claims["jti"], float(claims["iat"]), float(claims["exp"])))
    log.debug("user %s connected as %s", user.username, request.sid)  # type: ignore


@socketio.on("disconnect")
def on_disconnect(reason: Any = None) -> None:
    services().tokens.remove(request.sid)  # type: ignore[attr-defined]
    subscriptions.forget(request.sid, services().redis)  # type: ignore[attr-defined]
    services().gateway.disconnected(request.sid)  # type: ignore[attr-defined]


def end_session(sid: str, reason: str) -> None:
    """Tell one client why its session ends (`session_ended` `{reason}`), then disconnect it:
    its token was revoked or expired, or its account disabled."""
    socketio.server.emit("session_ended", {"reason": reason}, to=sid, namespace="/")
    socketio.server.disconnect(sid, namespace="/")


def data_handler(gateway: Gateway) -> Callable[[EventRunner], EventRunner]:
    """Given python-socketio's event runner, one that handles the `data` event itself.

    python-socketio would call a handler and send its return value as the ack, so the reader
    greenlet of the connection would wait for Redis before reading the client's next message.
    Here the event is taken before that dispatch: the messages are validated and handed to the
    gateway, and the ack (or, for a client that asked for none, an `error` event per refused
    message) goes out from the gateway's flusher once Redis has them. A client's messages are
    queued, written and acknowledged in the order it sent them. Other events go the usual way.
    """
    server = socketio.server
    max_items = gateway.settings.MAX_BATCH_ITEMS

    def wrap(dispatch: EventRunner) -> EventRunner:
        def handle_event(srv: Any, sid: str, eio_sid: str, data: list[Any], namespace: str,
                         ack_id: int | None) -> Any:
            if data[0] != "data" or namespace != "/":
                return dispatch(srv, sid, eio_sid, data, namespace, ack_id)
            reply = Reply(server, eio_sid, ack_id)
            user_id = gateway.users.get(sid)
            try:
                if user_id is None:
                    return reply.refuse("not connected")
                if len(data) > 2:
                    return reply.refuse("payload: must be one argument, a message or an array "
                                        "of them")
                payload = data[1] if len(data) == 2 else None
                if isinstance(payload, list):
                    if not payload or len(payload) > max_items:
                        return reply.refuse(f"payload: must hold 1 to {max_items} messages")
                    reply.batch = True
                    return submit(gateway, user_id, gateway.socket_limits, payload, reply)
                return submit(gateway, user_id, gateway.socket_limits, [payload], reply)
            except Exception:
                # Every message gets an answer, even one that trips over a bug.
                log.exception("data from %s could not be handled", user_id)
                return reply.refuse("internal error")

        return handle_event

    return wrap


class Reply:
    """Answers one `data` event: an ack when the client asked for one (the answer, or the list
    of answers of an array), otherwise an `error` event per refused message.

    Both are written as socket.io packets encoded here (namespace "/", no binary attachments:
    `3<id>[answer]` and `2["error",answer]`), straight to the client's engine.io session.
    """

    __slots__ = ("ack_id", "batch", "eio_sid", "server")

    def __init__(self, server: Any, eio_sid: str, ack_id: int | None) -> None:
        self.server, self.eio_sid, self.ack_id, self.batch = server, eio_sid, ack_id, False

    def __call__(self, answers: list[dict[str, Any]]) -> None:
        if self.ack_id is not None:
            send_encoded(self.server, self.eio_sid, b"3%d%s" % (self.ack_id, dumpb(
                [answers if self.batch else answers[0]])))
            return
        for answer in answers:
            if not answer["ok"] and not send_encoded(self.server, self.eio_sid,
                                                     b"2" + dumpb(["error", answer])):
                return

    def refuse(self, error: str) -> None:
        self([{"ok": False, "error": error}])
