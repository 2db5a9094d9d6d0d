"""What a client may send at the socket.io layer, and what happens when it sends anything else.

python-socketio raises for a packet it cannot decode (invalid JSON, an unknown packet type, a
CONNECT_ERROR, which only servers send) and for an EVENT of the wrong shape (`42[]`, `42{}`,
`42`: it reads the event name before anything checks there is one); engine.io logs each with
a traceback and keeps the connection. It also runs whatever event a client names, its own
lifecycle handlers included: a client emitting `disconnect` ran the server's disconnect
handler, which counted the connection out while it stayed open. Here:

- a packet that does not decode, an EVENT that is not an array starting with its name, and an
  event or ack for a namespace the client has not joined are one warning line and the end of
  that connection, as with socket.io's own server ("parse error", "invalid state"); other
  clients never notice;
- an event named like a lifecycle event (socket.io-parser's RESERVED_EVENTS), or whose name is
  not a non-empty string, is refused with an answer (`event: …`), as an invalid message is;
  the connection stays, and one warning line per connection says so;
- JSON nested deeper than the parser goes is answered like any invalid message ("payload:
  nested too deeply"), on the ack when the packet asked for one, else as an `error` event;
- a packet announcing binary attachments disconnects: Tributary's events are JSON, and
  python-socketio would hold every attachment announced (up to 9,999,999,999) until the last.

Text that is not even an engine.io packet is refused earlier, by the sessions
(webapp/realtime/engineio_session.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from socketio import packet

from engine.errors import MalformedPacket, NestedTooDeeply
from webapp import offenders
from webapp.extensions import socketio
from webapp.gateway import Gateway
from webapp.realtime.events import Reply
from webapp.realtime.internals import decode_problem, header_decoder, session_of

log = logging.getLogger(__name__)

#: socket.io packet types a client may send (CONNECT_ERROR only ever comes from a server).
_FROM_CLIENTS = frozenset({packet.CONNECT, packet.DISCONNECT, packet.EVENT, packet.ACK,
                           packet.BINARY_EVENT, packet.BINARY_ACK})
#: Event names a client may not use: socket.io's lifecycle events (socket.io-parser's list).
RESERVED_EVENTS = frozenset({"connect", "connect_error", "disconnect", "disconnecting",
                             "newListener", "removeListener"})
TOO_DEEP = "payload: nested too deeply"

#: Given an engine.io session id, the user who joined socket.io on it, or None.
Identify = Callable[[str], "str | None"]


def identifier(gateway: Gateway) -> Identify:
    """`Identify` for the sessions of `socketio`, from the users `gateway` has connected."""
    manager = socketio.server.manager

    def identify(eio_sid: str) -> str | None:
        sid = manager.sid_from_eio_sid(eio_sid, "/")
        return gateway.users.get(sid) if sid is not None else None

    return identify



def refuse_attachments() -> MalformedPacket:
    """What a packet announcing binary attachments raises."""
    return MalformedPacket("a packet with binary attachments, which Tributary does not take")


class Guard:
    """Checks python-socketio's handling of the engine.io messages of `server` (installed by
    webapp/realtime/internals.py: in place of its `_handle_event`, around its `_handle_ack` and
    engine.io's `message` handler).

    A decode error is told apart from an error raised by an event handler (which keeps its
    traceback) by decoding the packet again; that happens only when something was raised, so
    a well-formed packet costs nothing more.
    """

    def __init__(self, server: Any, identify: Identify) -> None:
        self.identify = identify
        self.server = server
        self.manager = self.server.manager
        self.decode_header = header_decoder(self.server)

    def joined(self, eio_sid: str, namespace: str | None) -> str:
        """The client's socket.io sid in `namespace`; raises MalformedPacket if it has not
        joined it."""
        namespace = namespace or "/"
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        if sid is None or not self.manager.is_connected(sid, namespace):
            raise MalformedPacket(f"a packet for namespace {namespace}, not joined")
        return sid  # type: ignore[no-any-return]

    def check_event(self, eio_sid: str, namespace: str | None, ack_id: int | None,
                    data: Any) -> tuple[str, str] | None:
        if type(data) is not list or not data:
            raise MalformedPacket("an EVENT that is not an array starting with the event name")
        namespace = namespace or "/"
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        if sid is None or not self.manager.is_connected(sid, namespace):
            self.joined(eio_sid, namespace)  # raises, saying why
        event = data[0]
        if event != "data" and (type(event) is not str or not event or event in RESERVED_EVENTS):
            self.refuse_event(eio_sid, ack_id, event)
            return None
        return sid, namespace

    def check_ack(self, eio_sid: str, namespace: str | None) -> None:
        self.joined(eio_sid, namespace)

    def refuse_event(self, eio_sid: str, ack_id: int | None, event: Any) -> None:
        if type(event) is str and event:
            error = f'event: "{event}" is a reserved name'
        else:
            error = "event: the name must be a non-empty string"
        session = session_of(self.server.eio, eio_sid)
        if session is not None and not session.warned:
            session.warned = True
            user_id = self.identify(eio_sid)
            offenders.warn(log, user_id, "reserved or invalid event name from %s: %.80r; "
                           "refused, the connection stays", offenders.who(user_id, session.peer),
                           event)
        Reply(self.server, eio_sid, ack_id).refuse(error)

    def answer_too_deep(self, eio_sid: str, data: Any) -> None:
        header = self.decode_header(data)
        if header.packet_type != packet.EVENT:
            raise MalformedPacket("JSON nested too deeply")
        self.joined(eio_sid, header.namespace)
        Reply(self.server, eio_sid, header.id).refuse(TOO_DEEP)

    def on_message(self, dispatch: Callable[[str, Any], Any], eio_sid: str, data: Any) -> Any:
        try:
            try:
                return dispatch(eio_sid, data)
            except NestedTooDeeply:
                return self.answer_too_deep(eio_sid, data)
        except MalformedPacket as exc:
            problem = str(exc)
        except (ValueError, TypeError) as exc:
            found = decode_problem(self.server, data, exc, _FROM_CLIENTS)
            if found is None:
                raise
            problem = found
        self.drop(eio_sid, problem, data)
        return None

    def drop(self, eio_sid: str, problem: str, data: Any) -> None:
        session = session_of(self.server.eio, eio_sid)
        if session is None:
            return
        if not session.warned:
            session.warned = True
            user_id = self.identify(eio_sid)
            offenders.warn(log, user_id, "malformed socket.io packet from %s (%s): %.80r; "
                           "disconnecting", offenders.who(user_id, session.peer), problem, data)
            offenders.offence(session.peer)
        # Not eio.disconnect(), which waits until a long-polling client fetched its CLOSE.
        session.close(wait=False, reason=self.server.eio.reason.SERVER_DISCONNECT)
