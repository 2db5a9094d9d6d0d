"""A web process whose websocket frames are read and written by wsproto instead of Tributary's
own frame code (webapp/realtime/transport.py), for `python -m bench wsproto` (bench/variants.py).

`python -m bench.wsproto_transport` serves exactly what `python -m webapp` serves, with one
difference: the engine.io sessions get a `WsprotoConnection`, which has the interface of
`webapp.realtime.transport.Connection` (receive, send, send_text, close, closed, owner, peer)
over wsproto's post-handshake `Connection`. The handshake stays gevent-websocket's, as in the
web process, so the two differ only in frame parsing, unmasking, UTF-8 checking and framing.
Writes go through the same non-blocking write path as the web process's own connection.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402
from typing import Any  # noqa: E402

from wsproto.connection import Connection as FrameProtocol  # noqa: E402
from wsproto.connection import ConnectionType  # noqa: E402
from wsproto.events import (  # noqa: E402
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError  # noqa: E402

from webapp.realtime import engineio_session, transport  # noqa: E402


class WsprotoConnection(transport.Connection):
    """`transport.Connection` with wsproto doing the frame work; the socket reads, the
    non-blocking writes and the close stay the web process's own."""

    __slots__ = ("_events", "_protocol", "_size")

    def __init__(self, websocket: Any, max_message_bytes: int) -> None:
        super().__init__(websocket, max_message_bytes)
        self._protocol = FrameProtocol(ConnectionType.SERVER)
        self._events: Any = iter(())
        self._size = 0

    def receive(self) -> str | bytes | None:
        parts: list[Any] = []
        while True:
            event = next(self._events, None)
            if event is None:
                if self.closed:
                    return None
                chunk = self._recv()
                if chunk is None:
                    return None
                try:
                    self._protocol.receive_data(chunk)
                except RemoteProtocolError:
                    self.close(transport.CLOSE_PROTOCOL_ERROR)
                    return None
                self._events = self._protocol.events()
                continue
            if isinstance(event, Message):
                parts.append(event.data)
                self._size += len(event.data)
                if self._size > self.max_message_bytes:
                    self.close(transport.CLOSE_TOO_BIG)
                    return None
                if not event.message_finished:
                    continue
                self._size = 0
                if isinstance(event, TextMessage):
                    return parts[0] if len(parts) == 1 else "".join(parts)
                return parts[0] if len(parts) == 1 else b"".join(parts)
            if isinstance(event, Ping):
                self._write(self._protocol.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.close(event.code)
                return None

    def send(self, message: str | bytes) -> None:
        if isinstance(message, str):
            self._send_event(TextMessage(data=message))
        else:
            self._send_event(BytesMessage(data=message))

    def send_text(self, payload: bytes) -> None:
        self._send_event(TextMessage(data=payload.decode()))

    def _send_event(self, event: Any) -> None:
        if self.closed:
            return
        try:
            self._write(self._protocol.send(event))
        except LocalProtocolError:
            self.close()


engineio_session.Connection = WsprotoConnection  # type: ignore[misc]

if __name__ == "__main__":
    from webapp.server import main

    sys.exit(main())
