"""The websocket transport under engine.io: gevent-websocket, with two changes.

- A size limit at the transport. gevent-websocket reads whatever length a frame header
  announces; here a frame, or a message made of several frames, over MAX_FRAME_BYTES closes
  that one connection before its payload is read, so one client cannot make the process
  buffer an arbitrarily large message.
- Origins checked at the handshake. gevent-websocket completes the upgrade before the app
  sees the request, so engine.io's own origin check could only answer on an already upgraded
  connection; a browser from another origin saw the websocket open, then break. Here the
  handshake itself is refused (403).
- No byte-by-byte Python loops on the hot path. gevent-websocket unmasks a client frame one
  byte at a time in Python (about 20 µs for a 150-byte message) and runs a Python UTF-8 state
  machine over every text frame and again over the whole message (about 25 µs each), then
  decodes the message anyway. Here the mask is applied as one big-integer XOR (under 2 µs),
  and UTF-8 is checked only by that decode, in C, which refuses invalid text (the connection is
  closed with status 1007). For one small message that is most of the transport's CPU time.
- A text message engine.io could not decode (empty, or not starting with a packet type) closes
  that connection with status 1002 and one warning line; engine.io would raise out of its
  reader, log a traceback and leave the session to its ping timeout.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

from geventwebsocket.exceptions import ProtocolError, WebSocketError
from geventwebsocket.handler import WebSocketHandler
from geventwebsocket.websocket import Header, WebSocket


class MessageTooBig(ProtocolError):  # type: ignore[misc]
    """A client sent a websocket message over the size limit (the connection is closed)."""


class MalformedPacket(ProtocolError):  # type: ignore[misc]
    """A client sent a text message that is not an engine.io packet (the connection is closed)."""


log = logging.getLogger(__name__)

_RECEIVED = "tributary.websocket.received"
#: What an engine.io text packet starts with: its type (base64 binary, "b…", is for polling only).
_PACKET_STARTS = frozenset("0123456789")


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR a client frame's payload with its 4-byte mask, as one integer operation."""
    size = len(payload)
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
        size, "little")


class LimitedWebSocket(WebSocket):  # type: ignore[misc]
    """gevent-websocket's WebSocket with a message size limit and a fast frame reader.

    The base class has __slots__, so the handler switches a new instance to this class
    (which adds no slot); the running byte count of the message being read lives in the
    connection's WSGI environ.
    """

    __slots__ = ()
    max_message_bytes = 1_000_000

    def read_message(self) -> Any:
        self.environ[_RECEIVED] = 0
        message = super().read_message()
        if type(message) is str and message[:1] not in _PACKET_STARTS:
            log.warning("malformed engine.io packet from %s: %.80r; closing the connection",
                        self.environ.get("REMOTE_ADDR"), message)
            raise MalformedPacket("not an engine.io packet")
        return message

    def read_frame(self) -> tuple[Header, bytes]:
        """One frame: refused before its payload is read when the message grows too big."""
        header = Header.decode_header(self.stream)
        if header.flags:
            raise ProtocolError("reserved bits set")
        if not header.length:
            return header, b""
        received = self.environ.get(_RECEIVED, 0) + header.length
        self.environ[_RECEIVED] = received
        if received > self.max_message_bytes:
            raise MessageTooBig(f"message over {self.max_message_bytes} bytes")
        try:
            payload = self.raw_read(header.length)
        except OSError:
            payload = b""
        if len(payload) != header.length:
            raise WebSocketError("Unexpected EOF reading frame payload")
        if header.mask:
            payload = unmask(payload, header.mask)
        return header, payload

    def validate_utf8(self, payload: bytes) -> None:
        """Left to the decode of the whole message (see the module docstring)."""


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
                # Acks are small frames written one after another: without TCP_NODELAY,
                # Nagle's algorithm holds each back until the client's (delayed) ACK of the
                # previous one arrives, up to 40 ms per ack.
                self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return result

    return LimitedWebSocketHandler
