"""engine.io sessions on Tributary's websocket transport: one greenlet per connection.

python-engineio runs a websocket session as a reader greenlet, a writer greenlet with a timed
queue wait per packet, and a greenlet per ping; with thousands of clients those switches and
timers cost more than the messages (docs/PERFORMANCE.md has the measurements). Here a session
on a websocket:

- reads in the connection's own greenlet (the WSGI handler's), and dispatches MESSAGE packets
  straight to the socket.io server, without engine.io's generic decode;
- writes every packet straight to the websocket from whichever greenlet sends it
  (`webapp.realtime.transport.Connection` never blocks that greenlet);
- is pinged by one greenlet per process (a `Schedule`), which keeps the due pings in the order
  they were scheduled.

Sessions on long-polling, and the polling part of a session that upgrades later, run
python-engineio's own code, held to the same rules as websockets:

- what is queued for a client that does not fetch it is capped at MAX_PENDING_BYTES, as on a
  websocket (python-engineio's queue has no limit); past it, the client is disconnected;
- a request body that does not decode, or carries packets only servers send, is one warning
  and the end of the session (python-engineio logs a traceback and keeps the session), and a
  payload may hold any number of packets within MAX_FRAME_BYTES (python-engineio drops a
  browser's flush of more than 16);
- closing never waits for the client to fetch its CLOSE packet (python-engineio's does, for
  ever when the client has gone);
- a request body of a user over its rate (`over_rate`: webapp/ingest.py `refuse_unread`) is
  not decoded (gevent drops its bytes): its messages beyond the allowance would be refused, and
  decoding megabytes of them, then answering each, is the cost a flood relies on. The session
  ends.

Whatever the transport, a session that has not joined socket.io (a CONNECT with a valid token)
CONNECT_TIMEOUT seconds after it opened is closed. `session_class` makes the class every new
session of an engine.io server becomes (by webapp/realtime/internals.py, which owns every touch
of python-engineio's internals).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
import weakref
from collections.abc import Callable
from functools import partial
from typing import Any, NoReturn
from urllib.parse import parse_qs

import gevent
from engineio import exceptions, packet
from gevent.event import Event
from gevent.queue import Empty

from engine.errors import ClientTooSlow
from webapp import offenders
from webapp.realtime.internals import SessionBase, decode_polling_payload, session_of
from webapp.realtime.transport import CLOSE_PROTOCOL_ERROR, MAX_PENDING_BYTES, Connection

log = logging.getLogger(__name__)

_CLOSE = packet.Packet(packet.CLOSE).encode()
#: The engine.io text packets a client sends on a websocket, besides MESSAGE and a bare PONG
#: (read first): CLOSE, PONG, UPGRADE (harmless once upgraded). Its PING ("2probe") comes only
#: during the upgrade, read by `_upgrade`; OPEN and NOOP come only from servers.
_WEBSOCKET_OTHERS = frozenset("135")
#: The engine.io packet types a client sends on long-polling.
_POLLING_TYPES = frozenset({packet.CLOSE, packet.PONG, packet.MESSAGE})

#: Given an engine.io session id, the user who joined socket.io on it, or None.
Identify = Callable[[str], "str | None"]
#: Given an engine.io session id, whether its socket.io CONNECT is being answered.
Joining = Callable[[str], bool]
#: Given a user and a request body's size, whether the body is refused without decoding it
#: because the user is over its rate on the socket.io path.
OverRate = Callable[[str, int], bool]


#: Scheduled actions (pings, connect deadlines) run in one turn of the event loop.
ACTIONS_PER_TURN = 32


class Schedule:
    """Calls `action(session)` `delay` seconds after each `add(session)`, from one greenlet,
    unless the session closed meanwhile; an action that returns True is called again `delay`
    later.

    With `spread`, each delay is drawn between `delay` and DEADLINE_SPREAD times it
    (`offenders.spread`), so that sessions opened in a burst do not all come due in the same
    turn of the event loop. The heap holds weak references: a session that closes (and its
    connection, buffers and environment with it) is freed at once, not when due.
    """

    def __init__(self, delay: float, action: Callable[[DirectSocket], bool | None], *,
                 spread: bool = False) -> None:
        self.delay = delay
        self.action = action
        self.spread = spread
        self._due: list[tuple[float, int, weakref.ref[DirectSocket]]] = []
        self._added = itertools.count()
        self._wake = Event()
        self._greenlet: gevent.Greenlet | None = None

    def add(self, session: DirectSocket) -> None:
        delay = offenders.spread(self.delay) if self.spread else self.delay
        due = time.monotonic() + delay
        heapq.heappush(self._due, (due, next(self._added), weakref.ref(session)))
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)
        if self._due[0][0] == due:  # sooner than what the greenlet sleeps for, if anything
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
                self._wake.clear()
                self._wake.wait(delay)
                continue
            self._run_due()

    def _run_due(self) -> None:
        """Act on every session due by now, yielding to the event loop after each
        ACTIONS_PER_TURN of them: a burst due together does not hold other clients up, and
        the schedule never needs more turns of a busy loop than its actions / ACTIONS_PER_TURN
        (one turn per action fell behind a loaded process's pings until clients timed out)."""
        due, now, ran = self._due, time.monotonic(), 0
        while due and due[0][0] <= now:
            session = heapq.heappop(due)[2]()
            if session is None or session.closing or session.closed:
                continue
            try:
                if self.action(session):  # asks to be called again, a delay from now
                    self.add(session)
            except Exception:
                log.exception("%s of session %s failed", self.action.__name__, session.sid)
            ran += 1
            if ran % ACTIONS_PER_TURN == 0:
                gevent.sleep(0)


def ping(session: DirectSocket) -> None:
    """Send the session its PING (engine.io v4: the server pings, the client answers)."""
    session.last_ping = time.time()
    session.send(packet.Packet(packet.PING))


def close_unless_joined(session: DirectSocket) -> bool:
    """Close a session that has not joined socket.io by now (CONNECT_TIMEOUT after it opened),
    as socket.io's own server does after its connectTimeout. A session whose CONNECT is still
    being answered (waiting its turn in a reconnect storm, say) is given one more period
    instead: True then, and the caller looks again at the end of it. Closing it would throw
    away the work done for it, and its client would only come back."""
    if session.identify(session.sid) is not None:
        return False
    if session.joining(session.sid) and not session.extended:
        session.extended = True
        return True
    session.warn("%s did not join socket.io within %g s (no CONNECT with a valid token); "
                 "closing the connection", session.connect_timeout)
    session.close(wait=False, reason=session.server.reason.SERVER_DISCONNECT)
    return False


class DirectSocket(SessionBase):
    """An engine.io session that reads and writes its websocket directly (module docstring)."""

    #: The websocket once the session runs on one; None while it is on long-polling.
    connection: Connection | None = None
    #: Set by `session_class`, per engine.io server.
    pinger: Schedule
    max_message_bytes: int
    connect_timeout: float
    identify: Identify
    joining: Joining
    over_rate: OverRate
    #: Whether the connect deadline was put off once already (see `close_unless_joined`).
    extended = False
    #: The client's address, for warnings (set when the session opens).
    peer: str | None = None
    #: Bytes queued for a long-polling client and not fetched yet.
    unsent = 0
    #: Whether a warning about this client was written already: one per connection.
    warned = False
    # engine.io's session state, which this class reads and sets.
    last_ping: float | None
    connected: bool
    closing: bool
    closed: bool

    # --- sending -------------------------------------------------------------------------------

    def send(self, pkt: packet.Packet) -> None:
        if self.connection is None:
            self._queue(pkt, len(pkt.data) if pkt.binary else len(pkt.encode()))
        elif self.check_ping_timeout():
            self.connection.send(pkt.encode())

    def send_message(self, payload: bytes) -> None:
        """Send an engine.io MESSAGE whose data (a socket.io packet) is already encoded as
        UTF-8 text: the hot path of acks, which skips encoding packet objects."""
        connection = self.connection
        if connection is None:
            self._queue(packet.Packet(packet.MESSAGE, data=payload.decode()), len(payload) + 1)
        elif self.check_ping_timeout():
            connection.send_text(b"4" + payload)

    def warn(self, message: str, *args: Any) -> None:
        """One warning line about this client (`message` names it with its first %s), the
        first time only: the caller ends the connection."""
        if not self.warned:
            self.warned = True
            user_id = self.identify(self.sid)
            offenders.warn(log, user_id, message, offenders.who(user_id, self.peer), *args)
            offenders.offence(self.peer)

    # --- long-polling (python-engineio's Socket, engineio/socket.py, within limits) ------------

    def _queue(self, pkt: packet.Packet, size: int) -> None:
        """Socket.send for long-polling: queue `pkt` until the client fetches it, at most
        MAX_PENDING_BYTES in all."""
        if not self.check_ping_timeout():
            return
        self.unsent += size
        if self.unsent > MAX_PENDING_BYTES:
            self.warn("long-polling client %s is not fetching what it is sent (%d bytes "
                      "waiting); disconnecting", self.unsent)
            # Nobody will fetch what is queued: the memory goes now, then the CLOSE is queued.
            while True:
                try:
                    self.queue.get(block=False)
                except Empty:
                    break
                self.queue.task_done()
            self.unsent = 0
            self.close(wait=False, reason=self.server.reason.TRANSPORT_ERROR)
            return
        self.queue.put(pkt)

    def poll(self) -> list[packet.Packet]:
        packets: list[packet.Packet] = super().poll()
        self.unsent = 0  # Socket.poll takes every queued packet at once
        return packets

    def handle_post_request(self, environ: dict[str, Any]) -> None:
        """Socket.handle_post_request: decode a long-polling request's packets and receive
        them; a body that does not decode, or a packet only servers send, ends the session
        with one warning (engine.io then answers 400)."""
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length > self.server.max_http_buffer_size:  # refused before this by the handler
            self._refuse("long-polling request from %s over %d bytes; closing the connection",
                         self.server.max_http_buffer_size)
        user_id = self.identify(self.sid) if length else None
        if user_id is not None and self.over_rate(user_id, length):
            self._refuse("%s sent a long-polling request of %d bytes while over its rate; "
                         "closing the connection without decoding it", length)
        try:
            body = environ["wsgi.input"].read(length)
        except ClientTooSlow:  # the handler said so already
            self.warned = True
            self._refuse("")
        try:
            # Any number of packets: a browser flushes everything it buffered in one request
            # (within maxPayload, MAX_FRAME_BYTES), and socket.io's own server takes them all.
            packets = decode_polling_payload(body.decode())
        except (ValueError, LookupError) as exc:  # bad UTF-8, base64, JSONP, packet type
            self._refuse("malformed engine.io packet from %s (%s: %s): %.80r; closing the "
                         "connection", type(exc).__name__, exc, body)
        for pkt in packets:
            if pkt.packet_type not in _POLLING_TYPES:
                self._refuse("malformed engine.io packet from %s (type %d, which clients do "
                             "not send): %.80r; closing the connection", pkt.packet_type, body)
            self.receive(pkt)
            if self.closed:  # a CLOSE, or a socket.io packet that ended the session
                return

    def _refuse(self, message: str, *args: Any) -> NoReturn:
        self.warn(message, *args)
        self.close(wait=False, reason=self.server.reason.TRANSPORT_ERROR)
        raise exceptions.EngineIOError("refused")

    def schedule_ping(self) -> None:
        if self.last_ping:  # the previous ping was answered
            self.last_ping = None
            self.pinger.add(self)

    def close(self, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
        connection = self.connection
        if connection is None:
            super().close(wait=wait, abort=abort, reason=reason)
            if self.closed:  # the client's next request is answered 400 either way
                self.forget()
            return
        if self.closed or self.closing:
            return
        self.closing = True
        self.trigger("disconnect", reason or self.server.reason.SERVER_DISCONNECT,
                     run_async=False)
        if not abort:
            connection.send(_CLOSE)
        self.closed = True
        connection.close()

    # --- the websocket -------------------------------------------------------------------------

    def run_websocket(self, websocket: Any) -> list[Any]:
        """Run the session on gevent-websocket's `websocket` until either side closes it."""
        connection = Connection(websocket, self.max_message_bytes)
        connection.owner = partial(self.identify, self.sid)
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
        self.unsent = 0
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
        trigger = self.dispatcher()
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
                if kind not in _WEBSOCKET_OTHERS:
                    self.warn("malformed engine.io packet from %s: %.80r; closing the "
                              "connection", message)
                    connection.close(CLOSE_PROTOCOL_ERROR)
                    return
            try:
                self.receive(packet.Packet(encoded_packet=message))
            except exceptions.UnknownPacketError:  # as python-engineio: ignored
                continue
            except exceptions.SocketIsClosedError:
                return


def session_class(eio: Any, max_message_bytes: int, connect_timeout: float | None = None,
                  identify: Identify | None = None, joining: Joining | None = None,
                  over_rate: OverRate | None = None
                  ) -> tuple[type[DirectSocket], Callable[[Any, dict[str, Any]], None]]:
    """The class the sessions of engine.io server `eio` become, and what to call with each new
    one and its WSGI environ: websocket messages are limited to `max_message_bytes`, and a
    session is closed `connect_timeout` seconds after it opened unless `identify` then finds
    the user who joined socket.io on it, or `joining` says its CONNECT is being answered (then
    once more a period later; never, without a `connect_timeout`); a large long-polling body
    of a user `over_rate` finds out of allowance is not read."""
    cls = type("DirectSocket", (DirectSocket,), {
        "pinger": Schedule(eio.ping_interval, ping),
        "max_message_bytes": max_message_bytes,
        "connect_timeout": connect_timeout,
        "identify": staticmethod(identify or (lambda eio_sid: None)),
        "joining": staticmethod(joining or (lambda eio_sid: False)),
        "over_rate": staticmethod(over_rate or (lambda user_id, body_bytes: False)),
    })
    deadlines = (Schedule(connect_timeout, close_unless_joined, spread=True) if connect_timeout
                 else None)

    def opened(session: DirectSocket, environ: dict[str, Any]) -> None:
        session.peer = environ.get("REMOTE_ADDR")
        if deadlines is not None:
            deadlines.add(session)

    return cls, opened  # type: ignore[return-value]


def closer_of_refused(eio: Any, path: str = "/socket.io/") -> Callable[[str], None]:
    """What the HTTP handler calls with the path of a request it refused (a long-polling body
    over MAX_FRAME_BYTES, one too slow): the engine.io session it was for is closed, as a
    websocket's is by a frame over the limit. The handler has logged why."""

    def refused(request_path: str) -> None:
        if not request_path.startswith(path):
            return
        sid = parse_qs(request_path.partition("?")[2]).get("sid", [""])[0]
        session = session_of(eio, sid)
        if session is not None and not session.closed:
            session.warned = True
            session.close(wait=False, reason=eio.reason.TRANSPORT_ERROR)

    return refused
