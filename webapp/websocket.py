"""The websocket transport under engine.io: gevent-websocket, with two changes.

- A size limit at the transport. gevent-websocket reads whatever length a frame header
  announces; here a frame, or a message made of several frames, over MAX_FRAME_BYTES closes
  that one connection before its payload is read, so one client cannot make the process
  buffer an arbitrarily large message.
- Origins checked at the handshake. gevent-websocket completes the upgrade before the app
  sees the request, so engine.io's own origin check could only answer on an already upgraded
  connection; a browser from another origin saw the websocket open, then break. Here the
  handshake itself is refused (403).
- No per-frame UTF-8 check in pure Python. gevent-websocket runs a Python state machine over
  every byte of every text frame, then decodes the message anyway; the decode (in C) already
  refuses invalid UTF-8 (the connection is closed with status 1007), so the state machine only
  costs time on the hot path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from geventwebsocket.exceptions import WebSocketError
from geventwebsocket.handler import WebSocketHandler
from geventwebsocket.websocket import WebSocket


class MessageTooBig(WebSocketError):
    """A client sent a websocket message over the size limit."""


_RECEIVED = "tributary.websocket.received"


class LimitedWebSocket(WebSocket):  # type: ignore[misc]
    """gevent-websocket's WebSocket, counting the bytes of the message being read.

    The base class has __slots__ and keeps its socket reader in the `raw_read` slot, so the
    handler switches a new instance to this class (which adds no slot) and wraps that reader;
    the running count lives in the connection's WSGI environ.
    """

    __slots__ = ()
    max_message_bytes = 1_000_000

    def read_message(self) -> Any:
        self.environ[_RECEIVED] = 0
        return super().read_message()

    def validate_utf8(self, payload: bytes) -> None:
        """Left to the decode of the whole message (see the module docstring)."""

    def limit_reads(self) -> None:
        # raw_read is a slot of the (untyped) base class.
        read: Any = self.raw_read  # type: ignore[has-type]
        environ, limit = self.environ, self.max_message_bytes

        def limited_read(length: int) -> bytes:
            environ[_RECEIVED] = received = environ.get(_RECEIVED, 0) + length
            if received > limit:
                # read_frame turns any error here into "Unexpected EOF": the connection
                # closes and the payload is never read.
                raise MessageTooBig(f"message over {limit} bytes")
            return read(length)  # type: ignore[no-any-return]

        self.raw_read = limited_read  # type: ignore[misc]


OriginCheck = Callable[[str | None, dict[str, Any]], bool]


def handler_class(max_message_bytes: int,
                  allowed_origin: OriginCheck | None = None) -> type[WebSocketHandler]:
    """A gevent WSGI handler class speaking websocket with the given message size limit,
    refusing the handshake of a browser whose origin `allowed_origin` does not accept."""
    socket_class = type("LimitedWebSocket", (LimitedWebSocket,),
                        {"__slots__": (), "max_message_bytes": max_message_bytes})

    class LimitedWebSocketHandler(WebSocketHandler):  # type: ignore[misc]
        def upgrade_connection(self) -> Any:
            origin = self.environ.get("HTTP_ORIGIN")
            if allowed_origin is not None and not allowed_origin(origin, self.environ):
                self.start_response("403 Forbidden", [("Content-Type", "text/plain")])
                return [b"Not an accepted origin."]
            result = super().upgrade_connection()
            if self.websocket is not None:
                self.websocket.__class__ = socket_class
                self.websocket.limit_reads()
            return result

    return LimitedWebSocketHandler
