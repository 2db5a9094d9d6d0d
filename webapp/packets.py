"""Malformed socket.io packets: one warning line and the end of that connection.

python-socketio raises ValueError (TypeError for some binary input) for a packet it cannot
decode: invalid JSON, an unknown packet type, a CONNECT_ERROR (which only servers send).
engine.io would log that with a traceback and keep the connection. Here the client is
disconnected with one warning line, as the JavaScript server does ("parse error"); other
clients never notice. Text that is not even an engine.io packet is refused earlier, by the
websocket transport (webapp/websocket.py).
"""

from __future__ import annotations

import logging
from typing import Any

from socketio import packet

from webapp.extensions import socketio
from webapp.gateway import Gateway

log = logging.getLogger(__name__)

#: socket.io packet types a client may send (CONNECT_ERROR only ever comes from a server).
_FROM_CLIENTS = frozenset({packet.CONNECT, packet.DISCONNECT, packet.EVENT, packet.ACK,
                           packet.BINARY_EVENT, packet.BINARY_ACK})


def install_packet_guard(gateway: Gateway) -> None:
    """Wrap python-socketio's engine.io `message` handler of `socketio` with the guard.

    A decode error is told apart from an error raised by an event handler (which keeps its
    traceback) by decoding the packet again; that happens only when something was raised, so a
    well-formed packet costs nothing more.
    """
    server = socketio.server
    eio = server.eio
    dispatch = eio.handlers["message"]

    def handle_message(eio_sid: str, data: Any) -> Any:
        try:
            return dispatch(eio_sid, data)
        except (ValueError, TypeError) as exc:
            problem = decode_problem(server, data, exc)
            if problem is None:
                raise
        sid = server.manager.sid_from_eio_sid(eio_sid, "/")
        user_id = gateway.users.get(sid) if sid else None
        remote = server.environ.get(eio_sid, {}).get("REMOTE_ADDR")
        log.warning("malformed socket.io packet from user %s at %s (%s): %.80r; disconnecting",
                    user_id or "(not connected)", remote, problem, data)
        eio.disconnect(eio_sid)
        return None

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
