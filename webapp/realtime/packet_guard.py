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


class _NoAttachments(dict):  # type: ignore[type-arg]
    """python-socketio's packets awaiting their binary attachments (`Server._binary_packet`),
    which never takes one."""

    def __setitem__(self, eio_sid: str, pkt: Any) -> None:
        raise MalformedPacket("a packet with binary attachments, which Tributary does not take")


class _NoJSON:
    """A JSON module that parses nothing: decoding a packet with it gives its type, namespace
    and ack id only."""

    @staticmethod
    def loads(_text: str) -> None:
        return None


def identifier(gateway: Gateway) -> Identify:
    """`Identify` for the sessions of `socketio`, from the users `gateway` has connected."""
    manager = socketio.server.manager

    def identify(eio_sid: str) -> str | None:
        sid = manager.sid_from_eio_sid(eio_sid, "/")
        return gateway.users.get(sid) if sid is not None else None

    return identify


def install_packet_guard(identify: Identify) -> None:
    """Guard python-socketio's handling of engine.io messages on the server of `socketio`.

    Two of its methods are replaced (socketio/server.py, python-socketio 5.18): `_handle_event`,
    called for every EVENT once decoded, and `_handle_ack`; its `_binary_packet` dict becomes
    one that refuses entries; engine.io's `message` handler is wrapped. A decode error is told
    apart from an error raised by an event handler (which keeps its traceback) by decoding the
    packet again; that happens only when something was raised, so a well-formed packet costs
    nothing more.
    """
    server = socketio.server
    eio = server.eio
    manager = server.manager
    dispatch = eio.handlers["message"]
    handle_ack = server._handle_ack

    class Header(server.packet_class):  # type: ignore[misc,name-defined]
        json = _NoJSON

    def joined(eio_sid: str, namespace: str | None) -> str:
        """The client's socket.io sid in `namespace`; raises MalformedPacket if it has not
        joined it."""
        namespace = namespace or "/"
        sid = manager.sid_from_eio_sid(eio_sid, namespace)
        if sid is None or not manager.is_connected(sid, namespace):
            raise MalformedPacket(f"a packet for namespace {namespace}, not joined")
        return sid  # type: ignore[no-any-return]

    def handle_event(eio_sid: str, namespace: str | None, ack_id: int | None,
                     data: Any) -> None:
        # python-socketio's Server._handle_event, with the event's shape and name checked.
        if type(data) is not list or not data:
            raise MalformedPacket("an EVENT that is not an array starting with the event name")
        namespace = namespace or "/"
        sid = manager.sid_from_eio_sid(eio_sid, namespace)
        if sid is None or not manager.is_connected(sid, namespace):
            joined(eio_sid, namespace)  # raises, saying why
        event = data[0]
        if event != "data" and (type(event) is not str or not event or event in RESERVED_EVENTS):
            refuse_event(eio_sid, ack_id, event)
            return
        if server.async_handlers:
            server.start_background_task(server._handle_event_internal, server, sid, eio_sid,
                                         data, namespace, ack_id)
        else:
            server._handle_event_internal(server, sid, eio_sid, data, namespace, ack_id)

    def checked_ack(eio_sid: str, namespace: str | None, ack_id: int, data: Any) -> None:
        joined(eio_sid, namespace)
        handle_ack(eio_sid, namespace, ack_id, data)

    def refuse_event(eio_sid: str, ack_id: int | None, event: Any) -> None:
        if type(event) is str and event:
            error = f'event: "{event}" is a reserved name'
        else:
            error = "event: the name must be a non-empty string"
        session = eio.sockets.get(eio_sid)
        if session is not None and not session.warned:
            session.warned = True
            user_id = identify(eio_sid)
            offenders.warn(log, user_id, "reserved or invalid event name from %s: %.80r; "
                           "refused, the connection stays", offenders.who(user_id, session.peer),
                           event)
        Reply(server, eio_sid, ack_id).refuse(error)

    def answer_too_deep(eio_sid: str, data: Any) -> None:
        header = Header(encoded_packet=data)
        if header.packet_type != packet.EVENT:
            raise MalformedPacket("JSON nested too deeply")
        joined(eio_sid, header.namespace)
        Reply(server, eio_sid, header.id).refuse(TOO_DEEP)

    def handle_message(eio_sid: str, data: Any) -> Any:
        try:
            try:
                return dispatch(eio_sid, data)
            except NestedTooDeeply:
                return answer_too_deep(eio_sid, data)
        except MalformedPacket as exc:
            problem = str(exc)
        except (ValueError, TypeError) as exc:
            found = decode_problem(server, data, exc)
            if found is None:
                raise
            problem = found
        drop(eio_sid, problem, data)
        return None

    def drop(eio_sid: str, problem: str, data: Any) -> None:
        session = eio.sockets.get(eio_sid)
        if session is None:
            return
        if not session.warned:
            session.warned = True
            user_id = identify(eio_sid)
            offenders.warn(log, user_id, "malformed socket.io packet from %s (%s): %.80r; "
                           "disconnecting", offenders.who(user_id, session.peer), problem, data)
        # Not eio.disconnect(), which waits until a long-polling client fetched its CLOSE.
        session.close(wait=False, reason=eio.reason.SERVER_DISCONNECT)

    server._handle_event = handle_event
    server._handle_ack = checked_ack
    server._binary_packet = _NoAttachments()
    eio.on("message", handle_message)


def decode_problem(server: Any, data: Any, exc: Exception) -> str | None:
    """What is wrong with a packet python-socketio refused with `exc`, or None when the packet
    is well formed (then `exc` came from an event handler)."""
    try:
        decoded = server.packet_class(encoded_packet=data)
    except (ValueError, TypeError) as decode_error:
        return f"{type(decode_error).__name__}: {decode_error}"
    if decoded.packet_type not in _FROM_CLIENTS:
        return f"packet type {decoded.packet_type!r}, not one a client sends"
    if str(exc).startswith("Unexpected binary"):  # an attachment nobody announced
        return str(exc)
    return None
