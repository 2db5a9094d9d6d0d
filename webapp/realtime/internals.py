"""Every touch-point on the internals of python-engineio, python-socketio, Flask-SocketIO and
gevent-websocket, in one module, checked against the library versions it was verified with.

The realtime layer replaces parts of those libraries (the other modules of webapp/realtime say
why). Whatever that takes beyond their public API — a class they do not export, an underscore
attribute, a method swapped on their server, one of their error texts — is done here and
nowhere else, so that an upgrade has one file to review and tests/test_realtime_internals.py
names the seam that broke. As python-socketio's own socketio/admin.py does with `instrument()`
and `uninstrument()`, `install` applies every patch at once and `uninstall` takes them back.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import socketio
from engineio import payload as engineio_payload
from engineio.socket import Socket
from geventwebsocket.websocket import WebSocket

from engine.connections import connect_cluster, is_cluster_url
from engine.errors import ConfigError

log = logging.getLogger(__name__)

#: The library versions every touch-point here was verified with; requirements.txt pins these
#: (tests/test_realtime_internals.py). docs/ARCHITECTURE.md, "Upgrading the socket.io stack",
#: says what to check before changing one.
VERIFIED_VERSIONS = {
    "python-engineio": "4.15.1",
    "python-socketio": "5.18.1",
    "Flask-SocketIO": "5.7.0",
    "gevent-websocket": "0.10.1",
    "gevent": "26.9.0",
}
#: The setting that lets an operator run on other versions, knowingly.
OVERRIDE = "ALLOW_UNVERIFIED_LIBRARIES"

#: What python-socketio raises for a binary packet before the client joined a namespace.
_UNEXPECTED_BINARY = "Unexpected binary"


def unverified_versions() -> list[str]:
    """One line per library whose installed version is not the verified one."""
    problems = []
    for package, verified in VERIFIED_VERSIONS.items():
        try:
            installed: str | None = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != verified:
            problems.append(f"{package} {installed or '(not installed)'} is installed, the "
                            f"realtime layer was verified with {package}=={verified}")
    return problems


def check_versions(allow_unverified: bool) -> None:
    """Raise ConfigError naming each library whose version differs from VERIFIED_VERSIONS,
    unless `allow_unverified` (then it is a warning per library)."""
    problems = unverified_versions()
    if not problems:
        return
    if allow_unverified:
        for problem in problems:
            log.warning("%s; running anyway (%s)", problem, OVERRIDE)
        return
    raise ConfigError(f"{OVERRIDE}: {'; '.join(problems)}. Check the touch-points listed "
                      "under 'Upgrading the socket.io stack' in docs/ARCHITECTURE.md, or set "
                      f"{OVERRIDE}=true to run anyway")


# --- engine.io sessions (engineio/socket.py, engineio/server.py) --------------------------------

class SessionBase(Socket):  # type: ignore[misc]
    """python-engineio's session, `engineio.socket.Socket` (not exported), with the hooks a
    Tributary session overrides given names of its own.

    Its public-named state is used as is by subclasses: `queue`, `connected`, `upgrading`,
    `upgraded`, `closing`, `closed`, `last_ping`, `check_ping_timeout`, `schedule_ping`,
    `poll`, `handle_post_request`, `receive`, `close`.
    """

    def _websocket_handler(self, ws: Any) -> list[Any]:
        # Called by Socket._upgrade_websocket with engineio's gevent driver's WebSocketWSGI,
        # which keeps gevent-websocket's WebSocket in `_sock`.
        return self.run_websocket(ws._sock)

    def run_websocket(self, websocket: Any) -> list[Any]:
        """Run the session on gevent-websocket's `websocket` until either side closes it."""
        raise NotImplementedError

    def dispatcher(self) -> Callable[..., Any]:
        """engine.io's `_trigger_event(event, sid, *args, run_async=...)`, bound: what a session
        calls for each message, read once per connection."""
        return self.server._trigger_event  # type: ignore[no-any-return]

    def trigger(self, event: str, *args: Any, run_async: bool) -> Any:
        """Run the server's handler of `event` for this session (connect, message,
        disconnect)."""
        return self.server._trigger_event(event, self.sid, *args, run_async=run_async)

    def forget(self) -> None:
        """Take this closed session out of the server's `sockets` now: python-engineio keeps
        it until something sweeps it, and a long-polling POST for it meanwhile raises KeyError
        out of its request handler (a traceback)."""
        sessions = self.server.sockets
        if sessions.get(self.sid) is self:
            del sessions[self.sid]


class _UnlimitedPayload(engineio_payload.Payload):  # type: ignore[misc]
    """python-engineio's long-polling payload without its limit of 16 packets."""

    max_decode_packets = sys.maxsize


def decode_polling_payload(body: str) -> list[Any]:
    """The engine.io packets of a long-polling request body, however many (python-engineio
    drops a browser's flush of more than 16). Raises ValueError or LookupError when the body
    does not decode."""
    return _UnlimitedPayload(encoded_payload=body).packets  # type: ignore[no-any-return]


def session_of(eio: Any, eio_sid: str) -> Any:
    """The open engine.io session `eio_sid` of server `eio`, or None."""
    return eio.sockets.get(eio_sid)


def disconnect_all(eio: Any) -> None:
    """Close every engine.io session of `eio` without waiting; their disconnect handlers run
    now (engine.io's own `disconnect()` waits for each client to fetch its CLOSE, which a
    polling client that went away never does)."""
    for session in list(eio.sockets.values()):
        session.close(wait=False, reason=eio.reason.SERVER_DISCONNECT)
    eio.sockets = {}


# --- gevent-websocket (geventwebsocket/handler.py, geventwebsocket/websocket.py) ----------------

@dataclass(frozen=True)
class RawWebsocket:
    """What Tributary's frame reader needs of an upgraded gevent-websocket WebSocket."""

    socket: Any
    #: The first read: whatever the client sent right behind its upgrade request is in the
    #: handler's buffered reader.
    first_read: Callable[[int], bytes]
    peer: str | None
    websocket: Any


def raw_websocket(websocket: Any) -> RawWebsocket:
    handler = websocket.handler
    return RawWebsocket(handler.socket, handler.rfile.read1,
                        websocket.environ.get("REMOTE_ADDR"), websocket)


class _ClosedWebsocket(WebSocket):  # type: ignore[misc]
    """A gevent-websocket WebSocket that Tributary closed: its `close` does nothing.

    gevent-websocket's `close`, which its `__del__` calls, does not return early on a closed
    websocket: it makes a new class (`current_app`'s MockApp) twice and raises and catches an
    error, all of it garbage in reference cycles, once per connection."""

    __slots__ = ()

    def close(self, code: int = 1000, message: bytes = b"") -> None:
        return None


def mark_closed(raw: RawWebsocket) -> None:
    """Tell gevent-websocket the websocket is closed, so that it sends no close frame of its
    own when the application returns, and does nothing when the websocket is freed."""
    websocket = raw.websocket
    websocket.closed = True
    if type(websocket) is WebSocket:
        websocket.__class__ = _ClosedWebsocket


def upgraded_websocket(handler: Any) -> Any:
    """The WebSocket a gevent-websocket handler's upgrade made, or None when it refused the
    handshake (then the attribute does not exist at all)."""
    return vars(handler).get("websocket")


# --- the socket.io server (socketio/server.py, socketio/base_server.py) -------------------------

#: python-socketio's `Server._handle_event_internal(server, sid, eio_sid, data, namespace, id)`:
#: runs an event's handler and sends its ack.
EventRunner = Callable[[Any, str, str, list[Any], str, "int | None"], Any]


class PacketGuard(Protocol):
    """What the socket.io server asks before handling a client's packet."""

    def check_event(self, eio_sid: str, namespace: str | None, ack_id: int | None,
                    data: Any) -> tuple[str, str] | None:
        """(sid, namespace) when the EVENT is to run; None when it was refused (answered)."""

    def check_ack(self, eio_sid: str, namespace: str | None) -> None:
        """Raise when the client may not send this ACK."""

    def on_message(self, dispatch: Callable[[str, Any], Any], eio_sid: str, data: Any) -> Any:
        """Handle one engine.io message; `dispatch` is python-socketio's handling of it."""


class _NoAttachments(dict):  # type: ignore[type-arg]
    """python-socketio's packets awaiting their binary attachments (`Server._binary_packet`),
    which never takes one."""

    def __init__(self, refuse: Callable[[], Exception]) -> None:
        super().__init__()
        self.refuse = refuse

    def __setitem__(self, eio_sid: str, pkt: Any) -> None:
        raise self.refuse()


class _NoJSON:
    """A JSON module that parses nothing: decoding a packet with it gives its type, namespace
    and ack id only."""

    @staticmethod
    def loads(_text: str) -> None:
        return None


def header_decoder(server: Any) -> Callable[[str], Any]:
    """Decodes a socket.io packet's type, namespace and ack id (`packet_type`, `namespace`,
    `id`) without parsing its JSON."""
    header_class = type("Header", (server.packet_class,), {"json": _NoJSON})
    return lambda data: header_class(encoded_packet=data)


def decode_problem(server: Any, data: Any, exc: Exception, from_clients: frozenset[int]
                   ) -> str | None:
    """What is wrong with a packet python-socketio refused with `exc`, or None when the packet
    is well formed (then `exc` came from an event handler)."""
    try:
        decoded = server.packet_class(encoded_packet=data)
    except (ValueError, TypeError) as decode_error:
        return f"{type(decode_error).__name__}: {decode_error}"
    if decoded.packet_type not in from_clients:
        return f"packet type {decoded.packet_type!r}, not one a client sends"
    if str(exc).startswith(_UNEXPECTED_BINARY):  # an attachment nobody announced
        return str(exc)
    return None


def connecting(server: Any) -> Callable[[str], bool]:
    """Whether a session's socket.io CONNECT (namespace "/") is being answered. python-socketio's
    `_handle_connect` gives the client a sid (`manager.pre_connect`) before it calls the connect
    handler, and takes it back (`manager.disconnect`) when the handler refuses; a session that
    joined has its sid too (tell the two apart by whether the handler admitted it)."""
    manager = server.manager
    return lambda eio_sid: manager.sid_from_eio_sid(eio_sid, "/") is not None


def send_encoded(server: Any, eio_sid: str, payload: bytes) -> bool:
    """Send a socket.io packet already encoded (UTF-8 text) to one client's session; False when
    it has none open."""
    session = server.eio.sockets.get(eio_sid)
    if session is None or session.closed:
        return False
    session.send_message(payload)
    return True


# --- install / uninstall -----------------------------------------------------------------------

#: What `install` replaced on a server, to be put back by `uninstall`.
_ORIGINALS = "_tributary_originals"
#: Attributes set on python-socketio's Server instance (shadowing its methods) by `install`.
_PATCHED = ("_handle_event_internal", "_handle_event", "_handle_ack", "_binary_packet")


@dataclass(frozen=True)
class Layer:
    """Tributary's parts of the realtime layer, for `install`."""

    #: The class every new engine.io session becomes (a SessionBase subclass).
    session_class: type[SessionBase]
    #: Called with each new session and its WSGI environ, once it has its class.
    on_session: Callable[[Any, dict[str, Any]], None]
    #: Given python-socketio's event runner, the one to use instead.
    event_runner: Callable[[EventRunner], EventRunner]
    guard: PacketGuard
    #: The exception raised for a packet announcing binary attachments.
    refuse_attachments: Callable[[], Exception]


def admin_instrumented() -> bool:
    """Whether python-socketio's admin UI instrumentation (socketio/admin.py) has patched
    engine.io's session class: it reports websocket and polling traffic from methods that
    Tributary's sessions override, and replaces engine.io's connect handler."""
    return not isinstance(vars(Socket).get("_websocket_handler"), types.FunctionType)


def install(server: Any, layer: Layer) -> None:
    """Put Tributary's realtime layer into python-socketio server `server` (and its engine.io
    server), once, after Flask-SocketIO's init_app registered its handlers."""
    if vars(server).get(_ORIGINALS) is not None:
        raise RuntimeError("the realtime layer is installed on this server already")
    if admin_instrumented():
        raise ConfigError("python-socketio's admin instrumentation (Server.instrument) is "
                          "active: its reports would silently miss Tributary's sessions, and "
                          "it replaces their connect hook; it cannot run with this server")
    eio = server.eio
    originals: dict[str, Any] = {
        "connect": eio.handlers.get("connect"), "message": eio.handlers["message"],
        "bad-sid": "bad-sid" in eio.log_message_keys}
    setattr(server, _ORIGINALS, originals)
    originals["installed"] = install_sessions(eio, layer.session_class, layer.on_session)
    _install_events(server, layer, originals["message"])


def install_sessions(eio: Any, session_class: type[SessionBase],
                     on_session: Callable[[Any, dict[str, Any]], None]) -> Callable[..., Any]:
    """Make every new session of engine.io server `eio` a `session_class`, then call
    `on_session` with it, before the connect handler `eio` had; `install` does this as part of
    the whole layer, the bare server of bench/ on its own."""
    dispatch = eio.handlers.get("connect")

    def on_connect(eio_sid: str, environ: dict[str, Any], *args: Any) -> Any:
        # engine.io calls this right after creating the session, before any packet is read or
        # its first ping scheduled: the moment to give it its class.
        session = eio.sockets.get(eio_sid)
        if type(session) is Socket:
            session.__class__ = session_class
            on_session(session, environ)
        return dispatch(eio_sid, environ, *args) if dispatch is not None else None

    eio.on("connect", on_connect)
    # A long-polling client asking for a session the server has closed is routine:
    # python-engineio logs the first one per process at ERROR, the rest at INFO, remembering
    # which in `log_message_keys`; here, all at INFO.
    eio.log_message_keys.add("bad-sid")
    return on_connect


def _install_events(server: Any, layer: Layer, dispatch: Any) -> None:
    guard = layer.guard
    run_event = layer.event_runner(server._handle_event_internal)
    handle_ack = server._handle_ack

    def handle_event(eio_sid: str, namespace: str | None, ack_id: int | None,
                     data: Any) -> None:
        # python-socketio's Server._handle_event, with the guard's checks.
        checked = guard.check_event(eio_sid, namespace, ack_id, data)
        if checked is None:
            return
        sid, namespace = checked
        if server.async_handlers:
            server.start_background_task(run_event, server, sid, eio_sid, data, namespace,
                                         ack_id)
        else:
            run_event(server, sid, eio_sid, data, namespace, ack_id)

    def checked_ack(eio_sid: str, namespace: str | None, ack_id: int, data: Any) -> None:
        guard.check_ack(eio_sid, namespace)
        handle_ack(eio_sid, namespace, ack_id, data)

    server._handle_event_internal = run_event
    server._handle_event = handle_event
    server._handle_ack = checked_ack
    server._binary_packet = _NoAttachments(layer.refuse_attachments)
    server.eio.on("message", functools.partial(guard.on_message, dispatch))


def uninstall(server: Any) -> None:
    """Take back what `install` did to `server`: python-socketio's and python-engineio's own
    handling again for every new session and packet (sessions already open keep their class)."""
    originals = vars(server).pop(_ORIGINALS, None)
    if originals is None:
        return
    for name in _PATCHED:
        vars(server).pop(name, None)
    server._binary_packet = {}
    eio = server.eio
    if originals["connect"] is None:
        eio.handlers.pop("connect", None)
    else:
        eio.on("connect", originals["connect"])
    eio.on("message", originals["message"])
    if not originals["bad-sid"]:
        eio.log_message_keys.discard("bad-sid")


def check_installed(server: Any) -> None:
    """Raise ConfigError when something undid part of `install` since (python-socketio's admin
    instrumentation, say): a web process checks this before it listens."""
    originals = vars(server).get(_ORIGINALS)
    if originals is None:
        raise ConfigError("the realtime layer is not installed on the socket.io server")
    if admin_instrumented():
        raise ConfigError("python-socketio's admin instrumentation (Server.instrument) was "
                          "applied after the realtime layer: it cannot run with this server")
    if server.eio.handlers.get("connect") is not originals["installed"]:
        raise ConfigError("engine.io's connect handler was replaced after the realtime layer "
                          "was installed: new sessions would not be Tributary's")


class ClusterRedisManager(socketio.RedisManager):  # type: ignore[misc]
    """python-socketio's RedisManager, which also takes a `redis+cluster://` URL (python-socketio
    does not know the scheme): it then connects through redis-py's RedisCluster, where a message
    published on any node reaches the subscribers of every node. `_redis_connect` is where the
    manager makes its client and its pub/sub, and it calls it again to reconnect."""

    def _redis_connect(self) -> None:
        if not is_cluster_url(self.redis_url):
            super()._redis_connect()
            return
        # Bytes, no read timeout: as python-socketio's own client (its listener compares
        # channel names as bytes and blocks in listen() until a message comes).
        self.redis = connect_cluster(self.redis_url, socket_connect_timeout=5)
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        self.connected = True
