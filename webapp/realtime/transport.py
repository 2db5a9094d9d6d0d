"""The websocket transport: gevent-websocket's handshake, then Tributary's own frame reader and
writer on the raw socket (`Connection`), which engine.io sessions use directly
(webapp/realtime/engineio_session.py).

gevent-websocket does the HTTP upgrade. Past that point it would read a frame with several
buffered-file calls, unmask it one byte at a time in Python, run a Python UTF-8 state machine
over it twice, and leave every write to a writer greenlet per connection. Here:

- One `recv` per burst of frames, parsed from a buffer; the mask is one big-integer XOR, and
  UTF-8 is checked by the decode that happens anyway (invalid text closes with status 1007).
- A size limit at the transport: a message (one frame or several) over `max_message_bytes` is
  refused as soon as the frame header announces it, before its payload is read (status 1009),
  so one client cannot make the process buffer an arbitrarily large message.
- Writes go straight to the socket without blocking the writer: a frame the kernel cannot take
  at once is kept, in order, and sent by a drain greenlet. A client that stops reading cannot
  stall anyone else; past `MAX_PENDING_BYTES` unsent, its connection is closed.
- Client frames must be masked and carry no extension bits (RFC 6455); anything else closes
  the connection with status 1002.

The handshake itself (gevent-websocket's, with Tributary's origin check and HTTP limits) is in
webapp/realtime/handler.py.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any

import gevent

from webapp import offenders
from webapp.realtime.internals import mark_closed, raw_websocket

log = logging.getLogger(__name__)

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR, CLOSE_INVALID_DATA, CLOSE_POLICY, CLOSE_TOO_BIG = (
    1000, 1002, 1007, 1008, 1009)

#: Bytes asked of the kernel per read: a burst of small frames, or a good part of a large one.
READ_SIZE = 65536
#: Unsent bytes a connection may accumulate (a client that stopped reading); past it, the
#: connection is closed. Acks are about a hundred bytes: this is thousands of them.
MAX_PENDING_BYTES = 1 << 20


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR a client frame's payload with its 4-byte mask, as one integer operation."""
    size = len(payload)
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
        size, "little")


def frame(opcode: int, payload: bytes) -> bytes:
    """A complete, unmasked (server to client) frame."""
    size = len(payload)
    if size < 126:
        header = bytes((0x80 | opcode, size))
    elif size < 65536:
        header = bytes((0x80 | opcode, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 127)) + size.to_bytes(8, "big")
    return header + payload


def decode_header(buffer: bytes) -> tuple[int, int] | None:
    """(payload size, offset of the mask) announced by the frame header at the start of
    `buffer`, or None while the header is not all in."""
    available = len(buffer)
    if available < 2:
        return None
    size = buffer[1] & 0x7F
    if size < 126:
        return size, 2
    if size == 126:
        return (int.from_bytes(buffer[2:4], "big"), 4) if available >= 4 else None
    return (int.from_bytes(buffer[2:10], "big"), 10) if available >= 10 else None


def header_problem(first: int, second: int, size: int, received: int, limit: int
                   ) -> tuple[int, str] | None:
    """(close status, what is wrong) when a client frame's header breaks RFC 6455 or would take
    the message past `limit` bytes (`received` so far), else None."""
    if not second & 0x80:
        return CLOSE_PROTOCOL_ERROR, "an unmasked frame"
    if first & 0x70:
        return CLOSE_PROTOCOL_ERROR, "reserved bits set"
    if first & 0x0F >= OP_CLOSE:
        if size > 125 or not first & 0x80:
            return CLOSE_PROTOCOL_ERROR, "a fragmented or long control frame"
    elif received + size > limit:
        return CLOSE_TOO_BIG, f"a message over {limit} bytes"
    return None


class Connection:
    """One upgraded websocket: read by its own greenlet, written from any greenlet.

    `receive` gives the next message (str for text, bytes for binary) and answers pings and
    the closing handshake itself; it gives None once the connection is over, whoever ended it.
    `send` never blocks its caller.
    """

    __slots__ = ("_buffer", "_draining", "_pending", "_pending_bytes", "_read", "_received",
                 "_socket", "_websocket", "closed", "max_message_bytes", "owner", "peer")

    def __init__(self, websocket: Any, max_message_bytes: int) -> None:
        raw = raw_websocket(websocket)
        self._websocket = raw
        self._socket = raw.socket
        # The first read takes what the client sent right behind its upgrade request, later
        # ones go to the socket.
        self._read: Callable[[int], bytes] = raw.first_read
        self._buffer = b""
        self._received = 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._draining = False
        self.closed = False
        self.max_message_bytes = max_message_bytes
        self.peer = raw.peer
        #: Gives the user the connection belongs to, once known, for warnings (the session
        #: sets it); a warning about nobody's connection is rate-limited (webapp/offenders.py).
        self.owner: Callable[[], str | None] | None = None

    # --- reading -------------------------------------------------------------------------------

    def receive(self) -> str | bytes | None:
        """The next text or binary message, or None when the connection is over."""
        opcode = 0
        parts: list[bytes] = []
        self._received = 0
        while True:
            read = self._read_frame()
            if read is None:
                return None
            fin, op, payload = read
            if op >= OP_CLOSE:  # fin and at most 125 bytes, as _read_frame made sure
                if op == OP_PING:
                    self._write(frame(OP_PONG, payload))
                elif op == OP_CLOSE:
                    code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else CLOSE_NORMAL
                    self.close(code if 1000 <= code < 5000 and code not in (1004, 1005, 1006)
                               else CLOSE_PROTOCOL_ERROR)
                    return None
                elif op != OP_PONG:
                    self._refuse(CLOSE_PROTOCOL_ERROR, f"unknown opcode {op}")
                    return None
                continue
            if op == OP_CONTINUATION:
                if not opcode:
                    self._refuse(CLOSE_PROTOCOL_ERROR, "a continuation of nothing")
                    return None
            elif op in (OP_TEXT, OP_BINARY):
                if opcode:
                    self._refuse(CLOSE_PROTOCOL_ERROR, "a new message inside another")
                    return None
                opcode = op
            else:
                self._refuse(CLOSE_PROTOCOL_ERROR, f"unknown opcode {op}")
                return None
            if not fin:
                parts.append(payload)
                continue
            if parts:
                parts.append(payload)
                payload = b"".join(parts)
            if opcode == OP_BINARY:
                return payload
            try:
                return payload.decode()
            except UnicodeDecodeError:
                self._refuse(CLOSE_INVALID_DATA, "invalid UTF-8 text")
                return None

    def _read_frame(self) -> tuple[int, int, bytes] | None:
        """(fin, opcode, unmasked payload) of the next frame; None when the connection is over
        or the frame was refused (then the connection is closed)."""
        if self.closed:  # whatever is still buffered is not read after a close
            return None
        buffer = self._buffer
        while True:
            header = decode_header(buffer)
            if header is not None:
                return self._take_frame(buffer, *header)
            chunk = self._recv()
            if chunk is None:
                return None
            buffer = buffer + chunk if buffer else chunk
            self._buffer = buffer

    def _take_frame(self, buffer: bytes, size: int, start: int
                    ) -> tuple[int, int, bytes] | None:
        """The frame at the start of `buffer`, whose header announced `size` payload bytes
        behind a mask at `start`, read whole; None when it is refused or the peer went away."""
        problem = header_problem(buffer[0], buffer[1], size, self._received,
                                 self.max_message_bytes)
        if problem is not None:
            self._refuse(*problem)
            return None
        end = start + 4 + size
        if len(buffer) < end:
            # The header is in: read the rest of this frame as chunks joined once, not
            # re-scanning (and re-copying) the buffer per read.
            whole = self._read_until(buffer, end)
            if whole is None:
                return None
            buffer = whole
        first = buffer[0]
        if first & 0x0F < OP_CLOSE:
            self._received += size
        payload = unmask(buffer[start + 4:end], buffer[start:start + 4])
        self._buffer = buffer[end:] if len(buffer) > end else b""
        return first & 0x80, first & 0x0F, payload

    def _recv(self) -> bytes | None:
        """The next bytes from the peer; None (and the connection closed) when it is over."""
        if self.closed:
            return None
        try:
            chunk = self._read(READ_SIZE)
        except OSError:  # reset by the peer, or shut down by `close`
            chunk = b""
        self._read = self._socket.recv
        if not chunk:
            self.close()
            return None
        return chunk

    def _read_until(self, buffer: bytes, end: int) -> bytes | None:
        """`buffer` and what follows it from the peer, at least `end` bytes in all."""
        parts = [buffer]
        have = len(buffer)
        while have < end:
            chunk = self._recv()
            if chunk is None:
                return None
            parts.append(chunk)
            have += len(chunk)
        return b"".join(parts)

    def _refuse(self, code: int, what: str) -> None:
        self._warn("websocket from %s sent %s; closing the connection", what)
        offenders.offence(self.peer)
        self.close(code)

    def _warn(self, message: str, *args: object) -> None:
        user_id = self.owner() if self.owner is not None else None
        offenders.warn(log, user_id, message, offenders.who(user_id, self.peer), *args)

    # --- writing -------------------------------------------------------------------------------

    def send(self, message: str | bytes) -> None:
        """Send a text (str) or binary (bytes) message; dropped once the connection is over."""
        if isinstance(message, str):
            self._write(frame(OP_TEXT, message.encode()))
        else:
            self._write(frame(OP_BINARY, message))

    def send_text(self, payload: bytes) -> None:
        """Send a text message already encoded as UTF-8."""
        self._write(frame(OP_TEXT, payload))

    def _write(self, data: bytes) -> None:
        if self.closed:
            return
        if self._draining:
            self._queue(data)
            return
        try:
            sent = self._socket.send(data, 0, 0.0)  # gevent: timeout 0.0 never waits
        except BlockingIOError:
            sent = 0
        except OSError:
            self.close()
            return
        if sent < len(data):
            self._draining = True
            self._queue(data[sent:])
            gevent.spawn(self._drain)

    def _queue(self, data: bytes) -> None:
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes > MAX_PENDING_BYTES:
            self._warn("websocket client %s is not reading (%d bytes unsent); closing the "
                       "connection", self._pending_bytes)
            # Half a frame may be out already: no close frame can follow it, so the client
            # sees the connection drop (1006).
            self.close(CLOSE_POLICY)

    def _drain(self) -> None:
        """Send what the kernel could not take at once; writes meanwhile queue behind it."""
        try:
            while self._pending and not self.closed:
                data = b"".join(self._pending)
                self._pending.clear()
                self._pending_bytes = 0
                self._socket.sendall(data)
        except OSError:
            self.close()
        finally:
            self._pending.clear()
            self._pending_bytes = 0
            self._draining = False

    # --- closing -------------------------------------------------------------------------------

    def close(self, code: int = CLOSE_NORMAL) -> None:
        """Send a close frame (when it can go without waiting) and shut the socket down, which
        also wakes the reader; idempotent."""
        if self.closed:
            return
        if not self._draining:
            with contextlib.suppress(OSError):
                self._socket.send(frame(OP_CLOSE, code.to_bytes(2, "big")), 0, 0.0)
        self.closed = True
        mark_closed(self._websocket)  # gevent-websocket must not send a close frame of its own
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)

