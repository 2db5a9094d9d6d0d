"""socket.io events: authenticated connections and the `data` ingest event.

`connect` and `disconnect` are registered directly on the python-socketio server
(`Connections`), without Flask-SocketIO's app and request context per event, which a reconnect
storm pays thousands of times a second. The per-message `data` event is taken even earlier
(`data_handler`): it needs no Flask context either, which is what keeps the hot path lean. It
is answered once Redis has the messages, from the gateway's flusher.

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
from urllib.parse import parse_qs

from flask import Flask
from socketio.exceptions import ConnectionRefusedError
from structlog.contextvars import bind_contextvars

from engine import keys
from engine.errors import AuthError, RedisUnavailable, StorageUnavailable
from webapp import offenders, subscriptions
from webapp.accounts import AccountLoader
from webapp.admin import live
from webapp.auth import AccessTokens, admit_connection
from webapp.extensions import Services, socketio
from webapp.gateway import Gateway
from webapp.ingest import UNAVAILABLE, submit
from webapp.jsonmod import dumpb
from webapp.metrics import connect_refused
from webapp.realtime.internals import EventRunner, send_encoded
from webapp.revocation import Token

log = logging.getLogger(__name__)


def token_from_request(auth: Any, environ: dict[str, Any]) -> str | None:
    """The access token of a connecting client: `auth: {token}`, `?token=`, or a Bearer header."""
    if isinstance(auth, dict) and auth.get("token"):
        return str(auth["token"])
    query = environ.get("QUERY_STRING", "")
    if "token=" in query:
        given = parse_qs(query).get("token")
        if given and given[0]:
            return given[0]
    header = environ.get("HTTP_AUTHORIZATION", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None


class Connections:
    """The `connect` and `disconnect` handlers of one app, registered on its python-socketio
    server directly (`install`).

    Flask-SocketIO would run each in an app and request context of its own: building and
    tearing down a Flask request per connect and per disconnect, whose failed URL match (no
    Flask route serves /socket.io/) left a reference cycle through the NotFound it keeps, so
    every connection fed the garbage collector the whole stack of its greenlet. A client with
    a token needs none of that: the token comes from the `auth` payload, the query string or
    a header of the WSGI environ. Only the operator dashboard, signed in by its session
    cookie, gets a request context, to read that session.
    """

    __slots__ = ("access", "accounts", "app", "server", "shared")

    def __init__(self, app: Flask, server: Any) -> None:
        self.app = app
        self.server = server
        self.shared: Services = app.extensions["tributary"]
        self.access = AccessTokens(app.config["JWT_SECRET_KEY"])
        self.accounts = AccountLoader(self.shared.db)

    def connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = token_from_request(auth, environ)
        if token is None and environ.get("HTTP_COOKIE"):
            with self.app.request_context(environ):
                if live.wants_dashboard(token):  # the operator dashboard, by its cookie
                    return live.connect_dashboard(sid)
        shared = self.shared
        try:
            user, claims = admit_connection(shared.gateway, self.access, self.accounts, token,
                                            sid)
        except AuthError as exc:
            # Rate-limited: a client may send bad tokens as fast as it likes.
            offenders.warn(log, None, "connection refused (%s) from %s", exc,
                           environ.get("REMOTE_ADDR"), level=logging.INFO)
            connect_refused(shared.gateway, str(exc))
            raise ConnectionRefusedError(str(exc)) from None
        except RedisUnavailable as exc:
            shared.gateway.redis_failed(exc)  # logged once per outage, not per connection
            log.debug("connection refused: Redis unavailable")
            connect_refused(shared.gateway, UNAVAILABLE)
            raise ConnectionRefusedError(UNAVAILABLE) from None
        except StorageUnavailable as exc:
            # An account not cached yet could not be looked up: the client may retry.
            offenders.warn(log, None, "connection refused: %s", exc, level=logging.WARNING)
            connect_refused(shared.gateway, UNAVAILABLE)
            raise ConnectionRefusedError(UNAVAILABLE) from None
        bind_contextvars(user=user.username)  # this connection's log lines name its user
        self.server.enter_room(sid, keys.user_room(user.username), namespace="/")
        shared.tokens.add(sid, Token(user.username, claims["jti"], float(claims["iat"]),
                                     float(claims["exp"])))
        log.debug("user %s connected as %s", user.username, sid)
        return None

    def disconnect(self, sid: str, reason: Any = None) -> None:
        shared = self.shared
        shared.tokens.remove(sid)
        subscriptions.forget(sid, shared.redis)
        shared.gateway.disconnected(sid)


def install(app: Flask) -> Connections:
    """Register `app`'s connect and disconnect handlers on its socket.io server (once
    socketio.init_app made it)."""
    connections = Connections(app, socketio.server)
    socketio.server.on("connect", connections.connect, namespace="/")
    socketio.server.on("disconnect", connections.disconnect, namespace="/")
    return connections


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
