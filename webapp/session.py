"""engine.io sessions on Tributary's websocket transport: one greenlet per connection.

python-engineio runs a websocket session as two greenlets: a reader, and a writer that takes
each outgoing packet from a queue (a timed queue wait per packet), plus one more greenlet per
ping, sleeping out the ping interval. With thousands of clients each sending a message a
second, those switches and timers cost more than the message, and every packet's timer lives
long enough to be promoted to the oldest garbage-collector generation, so that full
collections of the whole heap come every few seconds (hundreds of milliseconds each with 5,000
connections). Here a session on a websocket:

- reads in the connection's own greenlet (the WSGI handler's), and dispatches MESSAGE packets
  straight to the socket.io server, without engine.io's generic decode;
- writes every packet straight to the websocket from whichever greenlet sends it
  (`webapp.websocket.Connection` never blocks that greenlet);
- is pinged by one greenlet per process (`Pinger`), which keeps the due pings in the order
  they were scheduled.

Sessions on long-polling, and the polling part of a session that upgrades later, are
python-engineio's own. `install` makes every new session of an engine.io server one of these.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

import gevent
from engineio import exceptions, packet
from engineio.socket import Socket
from gevent.event import Event
from gevent.queue import Empty

from webapp.websocket import CLOSE_PROTOCOL_ERROR, Connection

log = logging.getLogger(__name__)

_CLOSE = packet.Packet(packet.CLOSE).encode()
#: What an engine.io text packet starts with: its type (base64 binary, "b…", is for polling only).
_PACKET_TYPES = frozenset("0123456789")


class Pinger:
    """Sends each session its next PING when due, from one greenlet.

    Every session is scheduled `interval` seconds after its last PONG, so the due times come in
    the order they were added: a queue, not a heap.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._due: deque[tuple[float, DirectSocket]] = deque()
        self._wake = Event()
        self._greenlet: gevent.Greenlet | None = None

    def schedule(self, session: DirectSocket) -> None:
        self._due.append((time.monotonic() + self.interval, session))
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)
        if len(self._due) == 1:
            self._wake.set()

    def _run(self) -> None:
        due = self._due
        while True:
            if not due:
                self._wake.clear()
                self._wake.wait()
                continue
            delay = due[0][0] - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
                continue
            _, session = due.popleft()
            if not session.closing and not session.closed:
                session.last_ping = time.time()
                try:
                    session.send(packet.Packet(packet.PING))
                except Exception:
                    log.exception("pinging session %s failed", session.sid)


class DirectSocket(Socket):  # type: ignore[misc]
    """An engine.io session that reads and writes its websocket directly (module docstring)."""

    #: The websocket once the session runs on one; None while it is on long-polling.
    connection: Connection | None = None
    #: Set by `install`, per engine.io server.
    pinger: Pinger
    max_message_bytes: int
    # engine.io's session state, which this class reads and sets.
    last_ping: float | None
    connected: bool
    closing: bool
    closed: bool

    # --- sending -------------------------------------------------------------------------------

    def send(self, pkt: packet.Packet) -> None:
        if self.connection is None:
            super().send(pkt)
        else:
            if self.check_ping_timeout():
                self.connection.send(pkt.encode())

    def send_message(self, payload: bytes) -> None:
        """Send an engine.io MESSAGE whose data (a socket.io packet) is already encoded as
        UTF-8 text: the hot path of acks, which skips encoding packet objects."""
        connection = self.connection
        if connection is None:
            super().send(packet.Packet(packet.MESSAGE, data=payload.decode()))
        elif self.check_ping_timeout():
            connection.send_text(b"4" + payload)

    def schedule_ping(self) -> None:
        if self.last_ping:  # the previous ping was answered
            self.last_ping = None
            self.pinger.schedule(self)

    def close(self, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
        connection = self.connection
        if connection is None:
            super().close(wait=wait, abort=abort, reason=reason)
            return
        if self.closed or self.closing:
            return
        self.closing = True
        self.server._trigger_event("disconnect", self.sid,
                                   reason or self.server.reason.SERVER_DISCONNECT,
                                   run_async=False)
        if not abort:
            connection.send(_CLOSE)
        self.closed = True
        connection.close()

    # --- the websocket -------------------------------------------------------------------------

    def _websocket_handler(self, ws: Any) -> list[Any]:
        """Run the session on the websocket `ws` (engine.io's WSGI wrapper of gevent-websocket's
        WebSocket) until either side closes it."""
        connection = Connection(ws._sock, self.max_message_bytes)
        if self.connected and not self._upgrade(connection):
            connection.close()
            return []
        self.connected = self.upgraded = True
        # Packets queued before the websocket took over go first, then every later one is
        # written directly; nothing can run in between (no write here waits).
        while True:
            try:
                pkt = self.queue.get(block=False)
            except Empty:
                break
            self.queue.task_done()
            if pkt is not None:
                connection.send(pkt.encode())
        self.connection = connection
        if self.closed:  # closed while it was still on long-polling
            connection.close()
            return []
        try:
            self._read(connection)
        finally:
            connection.close()
            self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)
        return []

    def _upgrade(self, connection: Connection) -> bool:
        """The probe exchange of a session moving from long-polling to this websocket."""
        self.upgrading = True
        try:
            if connection.receive() != "2probe":
                log.info("session %s: failed websocket upgrade, no PING probe", self.sid)
                return False
            connection.send("3probe")
            self.queue.put(packet.Packet(packet.NOOP))  # ends the pending long-poll
            if connection.receive() != "5":
                log.info("session %s: failed websocket upgrade, no UPGRADE packet", self.sid)
                return False
            return True
        finally:
            self.upgrading = False

    def _read(self, connection: Connection) -> None:
        trigger = self.server._trigger_event
        run_async = self.server.async_handlers
        receive = connection.receive
        while True:
            message = receive()
            if message is None:
                return
            if type(message) is str:
                kind = message[:1]
                if kind == "4":
                    trigger("message", self.sid, message[1:], run_async=run_async)
                    continue
                if message == "3":
                    self.schedule_ping()
                    continue
                if kind not in _PACKET_TYPES:
                    log.warning("malformed engine.io packet from %s: %.80r; closing the "
                                "connection", connection.peer, message)
                    connection.close(CLOSE_PROTOCOL_ERROR)
                    return
            try:
                self.receive(packet.Packet(encoded_packet=message))
            except exceptions.UnknownPacketError:  # as python-engineio: ignored
                continue
            except exceptions.SocketIsClosedError:
                return


def install(eio: Any, max_message_bytes: int) -> None:
    """Make every session that engine.io server `eio` opens from now on a `DirectSocket`, with
    websocket messages limited to `max_message_bytes`."""
    session_class = type("DirectSocket", (DirectSocket,),
                         {"pinger": Pinger(eio.ping_interval),
                          "max_message_bytes": max_message_bytes})
    dispatch = eio.handlers.get("connect")

    def on_connect(eio_sid: str, environ: dict[str, Any], *args: Any) -> Any:
        # engine.io calls this right after creating the session, before any packet is read or
        # its first ping scheduled: the moment to give it its class.
        session = eio.sockets.get(eio_sid)
        if type(session) is Socket:
            session.__class__ = session_class
        return dispatch(eio_sid, environ, *args) if dispatch is not None else None

    eio.on("connect", on_connect)
