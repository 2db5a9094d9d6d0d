"""Every touch-point of webapp/realtime/internals.py on python-engineio, python-socketio and
gevent-websocket, one test each, against the stock libraries and in process: the versions are
the verified ones, nothing else reaches into the libraries, and each thing the layer relies on
still holds (docs/ARCHITECTURE.md, "Upgrading the socket.io stack", maps one to the other)."""

from __future__ import annotations

import ast
import base64
import gc
import inspect
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import engineio
import flask_socketio
import gevent
import gevent.pywsgi
import gevent.socket
import geventwebsocket.handler
import geventwebsocket.websocket
import pytest
import socketio
from engineio import packet as engineio_packet
from engineio import payload as engineio_payload
from engineio.async_drivers import gevent as engineio_gevent

from engine.errors import ConfigError
from engine.settings import Settings
from tests.conftest import ROOT
from tests.test_websocket_frames import OP_CLOSE, OP_TEXT, Peer, client_frame
from webapp.realtime import engineio_session, internals, packet_guard
from webapp.realtime.handler import Limits, handler_class

# --- the versions ------------------------------------------------------------------------------


def requirement_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line)
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def test_requirements_pin_exactly_the_verified_versions():
    pins = requirement_pins()
    assert {package: pins.get(package.lower()) for package in internals.VERIFIED_VERSIONS} == \
        internals.VERIFIED_VERSIONS


def test_the_installed_libraries_are_the_verified_versions():
    assert internals.unverified_versions() == []


def test_the_web_process_refuses_another_version_naming_the_package_and_the_verified_one(
        monkeypatch):
    monkeypatch.setitem(internals.VERIFIED_VERSIONS, "python-socketio", "5.0.0")
    from webapp import create_app

    with pytest.raises(ConfigError) as refused:
        create_app(settings=Settings.load(environ={}, env_file=None))
    assert "python-socketio 5.18.1 is installed" in str(refused.value)
    assert "python-socketio==5.0.0" in str(refused.value)
    assert internals.OVERRIDE in str(refused.value)


def test_an_operator_may_run_another_version_knowingly_and_it_is_logged(monkeypatch, caplog):
    monkeypatch.setitem(internals.VERIFIED_VERSIONS, "gevent-websocket", "0.9.0")
    internals.check_versions(allow_unverified=True)
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "gevent-websocket 0.10.1 is installed, the realtime layer was verified with "
        "gevent-websocket==0.9.0; running anyway (ALLOW_UNVERIFIED_LIBRARIES)"]


# --- nothing else reaches into the libraries ---------------------------------------------------

LIBRARIES = ("engineio", "socketio", "flask_socketio", "geventwebsocket")
#: The exceptions, each for a reason: the engine cannot import the web process.
ALLOWED = {("engine/receipts.py", "_publish")}


def library_private_names() -> set[str]:
    """Every single-underscore name the libraries' classes and server instances define."""
    names: set[str] = set()
    classes = [engineio.Server, engineio.socket.Socket, engineio_payload.Payload,
               socketio.Server, socketio.RedisManager, socketio.packet.Packet,
               flask_socketio.SocketIO, geventwebsocket.handler.WebSocketHandler,
               geventwebsocket.websocket.WebSocket, engineio_gevent.WebSocketWSGI]
    for cls in classes:
        for klass in cls.__mro__:
            if klass.__module__.split(".")[0] in LIBRARIES:
                names.update(vars(klass))
    names.update(vars(socketio.Server()))
    names.update(vars(socketio.Server().eio))
    wrapper = engineio_gevent.WebSocketWSGI(lambda ws: [], None)  # its names are set per call
    wrapper({"wsgi.websocket": gevent_websocket()}, start_response)
    names.update(vars(wrapper))
    return {name for name in names if name.startswith("_") and not name.startswith("__")}


def gevent_websocket() -> Any:
    """A gevent-websocket WebSocket, as its handler makes one after a handshake."""
    environ = {"HTTP_SEC_WEBSOCKET_VERSION": "13", "PATH_INFO": "/socket.io/"}
    stream = SimpleNamespace(read=None, write=None)
    return geventwebsocket.websocket.WebSocket(environ, stream, SimpleNamespace())


def python_files() -> Iterator[tuple[str, ast.Module]]:
    for folder in ("webapp", "engine", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "node_modules" in path.parts:
                continue
            yield str(path.relative_to(ROOT)), ast.parse(path.read_text())


def library_bindings(tree: ast.Module) -> set[str]:
    """The names a module binds to something imported from the libraries."""
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names
                         if alias.name.split(".")[0] in LIBRARIES)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in LIBRARIES:
            bound.update(alias.asname or alias.name for alias in node.names)
    return bound


def private_overrides(tree: ast.Module, private: set[str]) -> Iterator[ast.FunctionDef]:
    """Methods named like a library's private ones, in classes derived from a library's."""
    bound = library_bindings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(
                ast.unparse(base).split(".")[0] in bound for base in node.bases):
            yield from (item for item in node.body
                        if isinstance(item, ast.FunctionDef) and item.name in private)


def test_only_the_internals_module_touches_private_names_of_the_socketio_stack():
    private = library_private_names()
    assert {"_handle_event_internal", "_trigger_event", "_sock", "_binary_packet"} <= private
    found = []
    for name, tree in python_files():
        if name == "webapp/realtime/internals.py":
            continue
        used = [(node.lineno, node.attr) for node in ast.walk(tree)
                if isinstance(node, ast.Attribute) and node.attr in private
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))]
        used += [(node.lineno, node.name) for node in private_overrides(tree, private)]
        found += [f"{name}:{line} {attr}" for line, attr in used if (name, attr) not in ALLOWED]
    assert found == []


#: Modules of the libraries that hold what they do not export (their own internals).
INTERNAL_MODULES = ("engineio.socket", "engineio.base_socket", "engineio.payload",
                    "engineio.server", "engineio.base_server", "engineio.async_drivers",
                    "socketio.server", "socketio.base_server", "socketio.base_manager",
                    "geventwebsocket.websocket")


def test_only_the_internals_module_imports_what_the_socketio_stack_does_not_export():
    found = []
    for name, tree in python_files():
        if name == "webapp/realtime/internals.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported = [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                imported = [alias.name for alias in node.names]
            else:
                continue
            for full in imported:
                if full.split(".")[0] not in LIBRARIES:
                    continue
                if full.rsplit(".", 1)[-1].startswith("_") or any(
                        full == module or full.startswith(module + ".")
                        for module in INTERNAL_MODULES):
                    found.append(f"{name}:{node.lineno} {full}")
    assert found == []


# --- engine.io sessions ------------------------------------------------------------------------

def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
    start_response.status = status  # type: ignore[attr-defined]
    return lambda data: None


def polling_environ(query: str, method: str = "GET", body: bytes = b"") -> dict[str, Any]:
    import io

    return {"REQUEST_METHOD": method, "PATH_INFO": "/socket.io/", "QUERY_STRING": query,
            "REMOTE_ADDR": "127.0.0.1", "wsgi.input": io.BytesIO(body),
            "CONTENT_LENGTH": str(len(body)), "wsgi.url_scheme": "http",
            "SERVER_NAME": "localhost", "SERVER_PORT": "80", "HTTP_HOST": "localhost"}


@dataclass
class Realtime:
    """A python-socketio server with the realtime layer installed, served by gevent on a
    local port with Tributary's handler."""

    sio: Any
    port: int


def realtime_server(**options: Any) -> tuple[Any, Any]:
    sio = socketio.Server(**{"async_mode": "gevent", "async_handlers": False, "logger": False,
                             "engineio_logger": False, **options})

    @sio.on("connect")
    def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        return True

    def identify(eio_sid: str) -> str:
        return "alice"

    session_class, on_session = engineio_session.session_class(sio.eio, 1000, identify=identify)
    internals.install(sio, internals.Layer(
        session_class=session_class, on_session=on_session,
        event_runner=lambda run: run, guard=packet_guard.Guard(sio, identify),
        refuse_attachments=packet_guard.refuse_attachments))
    return sio, session_class


@pytest.fixture
def realtime() -> Iterator[Realtime]:
    sio, _ = realtime_server(ping_interval=0.2, ping_timeout=0.3)
    server = gevent.pywsgi.WSGIServer(("127.0.0.1", 0), socketio.WSGIApp(sio),
                                      handler_class=handler_class(Limits(5, 5, 16384, 100_000)),
                                      log=None)
    server.start()
    yield Realtime(sio, server.server_port)
    internals.disconnect_all(sio.eio)
    server.stop(timeout=1)
    sio.shutdown()
    internals.uninstall(sio)


def open_websocket(port: int, version: str = "13") -> tuple[str, Peer]:
    """A raw websocket to the engine.io endpoint: (the response's status line, the peer)."""
    sock = gevent.socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: localhost\r\n"
                  f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: {version}\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    head, _, rest = head.partition(b"\r\n\r\n")
    peer = Peer(sock)
    peer.buffer = rest
    return head.split(b"\r\n")[0].decode(), peer


def text(peer: Peer, timeout: float = 5) -> str | None:
    """The next text message, or None when the server closed the websocket."""
    opcode, payload = peer.frame(timeout)
    if opcode == OP_CLOSE:
        return None
    assert opcode == OP_TEXT
    return payload.decode()


def joined(port: int) -> Peer:
    status, peer = open_websocket(port)
    assert status.startswith("HTTP/1.1 101"), status
    assert (text(peer) or "").startswith("0{")  # engine.io OPEN
    peer.send(client_frame(OP_TEXT, b"40"))
    assert (text(peer) or "").startswith("40{")  # socket.io CONNECT answered
    return peer


def test_after_a_polling_handshake_the_session_is_tributarys_class():
    sio, session_class = realtime_server()
    try:
        body = b"".join(sio.eio.handle_request(polling_environ("EIO=4&transport=polling"),
                                               start_response))
        assert start_response.status.startswith("200")  # type: ignore[attr-defined]
        (session,) = sio.eio.sockets.values()
        assert type(session) is session_class
        assert session.peer == "127.0.0.1"
        assert body.startswith(b"0{")
    finally:
        internals.disconnect_all(sio.eio)
        internals.uninstall(sio)


def test_the_copied_signature_of_handle_event_internal_still_matches_the_librarys():
    parameters = list(inspect.signature(socketio.Server._handle_event_internal).parameters)
    assert parameters == ["self", "server", "sid", "eio_sid", "data", "namespace", "id"]
    handle_event = list(inspect.signature(socketio.Server._handle_event).parameters)
    assert handle_event == ["self", "eio_sid", "namespace", "id", "data"]
    handle_ack = list(inspect.signature(socketio.Server._handle_ack).parameters)
    assert handle_ack == ["self", "eio_sid", "namespace", "id", "data"]


def test_engineios_gevent_websocket_wrapper_still_exposes_the_raw_websocket():
    class Session(internals.SessionBase):
        def run_websocket(self, websocket: Any) -> list[Any]:
            seen.append(websocket)
            return []

    seen: list[Any] = []
    session = Session.__new__(Session)
    websocket = gevent_websocket()
    wrapper = engineio_gevent.WebSocketWSGI(session._websocket_handler, None)
    wrapper({"wsgi.websocket": websocket}, start_response)
    assert seen == [websocket]


def test_a_websocket_marked_closed_sends_nothing_and_leaves_no_garbage_when_freed():
    written: list[bytes] = []
    websocket = gevent_websocket()
    # Served by an application without `current_app`, as gevent's WSGIServer serves the app.
    websocket.handler = SimpleNamespace(server=SimpleNamespace(application=object()))
    websocket.raw_write = written.append
    internals.mark_closed(internals.RawWebsocket(None, lambda size: b"", None, websocket))
    assert websocket.closed
    websocket.close()  # as gevent-websocket's handler and __del__ call it
    gc.collect()
    del websocket
    assert (gc.collect(), written) == (0, [])


def test_the_sessions_of_a_server_are_where_the_layer_looks_for_them():
    sio, _ = realtime_server()
    try:
        b"".join(sio.eio.handle_request(polling_environ("EIO=4&transport=polling"),
                                        start_response))
        (sid,) = sio.eio.sockets
        assert internals.session_of(sio.eio, sid) is sio.eio.sockets[sid]
        internals.session_of(sio.eio, sid).close(wait=False)
        assert sid not in sio.eio.sockets  # forgotten at once, not by the service task
    finally:
        internals.uninstall(sio)


def test_a_long_polling_payload_may_hold_more_than_the_librarys_sixteen_packets():
    body = "\x1e".join(["4hello"] * 40)
    with pytest.raises(ValueError):
        engineio_payload.Payload(encoded_payload=body)
    packets = internals.decode_polling_payload(body)
    assert [p.packet_type for p in packets] == [engineio_packet.MESSAGE] * 40


def test_a_request_for_a_closed_session_is_logged_at_info_every_time(caplog):
    sio, _ = realtime_server(engineio_logger=True)
    try:
        caplog.set_level(logging.INFO, logger="engineio.server")
        for _ in range(2):
            b"".join(sio.eio.handle_request(
                polling_environ("EIO=4&transport=polling&sid=gone"), start_response))
            assert start_response.status.startswith("400")  # type: ignore[attr-defined]
        bad_sid = [r for r in caplog.records if "Invalid session" in r.getMessage()]
        assert [r.levelno for r in bad_sid] == [logging.INFO, logging.INFO]
    finally:
        internals.uninstall(sio)


def test_pings_keep_an_idle_client_past_interval_and_timeout_and_a_silent_one_is_dropped(
        realtime):
    lively, silent = joined(realtime.port), joined(realtime.port)
    interval, timeout = realtime.sio.eio.ping_interval, realtime.sio.eio.ping_timeout
    deadline = time.monotonic() + 3 * (interval + timeout)
    pings = 0
    while time.monotonic() < deadline:
        message = text(lively)
        assert message == "2", message  # the server's PING, and nothing else (no CLOSE)
        pings += 1
        lively.send(client_frame(OP_TEXT, b"3"))
    assert pings >= 3
    assert text(silent) == "2"
    assert text(silent) == "1"  # engine.io CLOSE: the ping timed out
    assert text(silent) is None
    assert len(realtime.sio.eio.sockets) == 1


# --- socket.io packets -------------------------------------------------------------------------

def test_an_undeclared_binary_attachment_is_refused_with_one_warning(realtime, caplog):
    caplog.set_level(logging.WARNING)
    peer = joined(realtime.port)
    peer.send(client_frame(OP_TEXT, b'451-["data",{"_placeholder":true,"num":0}]'))
    assert text(peer) == "1"  # engine.io CLOSE
    assert text(peer) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "binary attachments" in warnings[0]
    assert realtime.sio._binary_packet == {}


def test_a_binary_packet_before_joining_is_told_apart_by_the_librarys_error_text(realtime):
    sio = realtime.sio
    binary = '51-["x",{"_placeholder":true,"num":0}]'
    with pytest.raises(ValueError) as raised:
        socketio.Server._handle_eio_message(sio, "nobody", binary)
    problem = internals.decode_problem(sio, binary, raised.value,
                                       packet_guard._FROM_CLIENTS)
    assert problem is not None and problem.startswith("Unexpected binary")


def test_a_websocket_handshake_gevent_websocket_refuses_gets_a_400_and_no_traceback(
        realtime, caplog):
    caplog.set_level(logging.DEBUG)
    status, peer = open_websocket(realtime.port, version="99")
    peer.sock.close()
    assert status.startswith("HTTP/1.1 400"), status
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


# --- install, uninstall, and what cannot share the server --------------------------------------

def test_uninstall_gives_the_server_back_to_the_library():
    sio, _ = realtime_server()
    stock = socketio.Server(async_mode="gevent")
    internals.uninstall(sio)
    for name in ("_handle_event_internal", "_handle_event", "_handle_ack"):
        assert name not in vars(sio)
    assert sio._binary_packet == {}
    assert sio.eio.handlers.keys() == stock.eio.handlers.keys()
    assert "bad-sid" not in sio.eio.log_message_keys
    internals.install(sio, internals.Layer(  # and it can be installed again
        session_class=engineio_session.session_class(sio.eio, 10)[0],
        on_session=lambda session, environ: None, event_runner=lambda run: run,
        guard=packet_guard.Guard(sio, lambda eio_sid: None),
        refuse_attachments=packet_guard.refuse_attachments))
    internals.check_installed(sio)
    internals.uninstall(sio)


def test_python_socketios_admin_instrumentation_is_refused_before_or_after_the_layer():
    sio, _ = realtime_server()
    admin = socketio.Server(async_mode="gevent")
    instrumented = None
    try:
        internals.check_installed(sio)
        instrumented = sio.instrument(auth=False)  # after the layer
        with pytest.raises(ConfigError, match="admin instrumentation"):
            internals.check_installed(sio)
        with pytest.raises(ConfigError, match="admin instrumentation"):  # before
            internals.install(admin, internals.Layer(
                session_class=engineio_session.session_class(admin.eio, 10)[0],
                on_session=lambda session, environ: None, event_runner=lambda run: run,
                guard=packet_guard.Guard(admin, lambda eio_sid: None),
                refuse_attachments=packet_guard.refuse_attachments))
    finally:
        if instrumented is not None:
            instrumented.uninstrument()
        internals.uninstall(sio)
    assert not internals.admin_instrumented()


# --- the shape of the layer --------------------------------------------------------------------

BLOCKS = (ast.If, ast.For, ast.While, ast.Try, ast.With, ast.Match)


def deepest(node: ast.AST, depth: int = 0) -> int:
    """How deep blocks nest inside `node` (an `elif` is at its `if`'s level), a nested
    function starting again from 0."""
    found = depth
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        is_elif = isinstance(node, ast.If) and node.orelse == [child] and \
            isinstance(child, ast.If)
        found = max(found, deepest(child, depth + (isinstance(child, BLOCKS) and not is_elif)))
    return found


def test_no_function_in_the_realtime_layer_nests_deeper_than_four_levels():
    too_deep = []
    for path in sorted((ROOT / "webapp" / "realtime").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and deepest(node) > 4:
                too_deep.append(f"{path.name}:{node.lineno} {node.name} ({deepest(node)})")
    assert too_deep == []


def test_python_socketios_redis_manager_makes_its_client_and_pubsub_in_redis_connect():
    # internals.ClusterRedisManager replaces that method for redis+cluster:// URLs; the manager
    # must make both there, and call it (again) when it (re)connects.
    import inspect

    import socketio

    source = inspect.getsource(socketio.RedisManager._redis_connect)
    assert "self.redis =" in source and "self.pubsub =" in source
    assert list(inspect.signature(socketio.RedisManager._redis_connect).parameters) == ["self"]
    assert "_redis_connect()" in inspect.getsource(socketio.RedisManager._redis_listen_with_retries)


def test_a_connect_being_answered_has_a_sid_and_a_refused_one_gives_it_back():
    # The connect deadline gives a session whose CONNECT is still being answered one more
    # period (engineio_session.close_unless_joined): python-socketio must have given it a sid
    # before calling the connect handler, and take it back when the handler refuses.
    sio = socketio.Server(async_mode="gevent", logger=False, engineio_logger=False)
    connecting = internals.connecting(sio)
    seen = {}

    @sio.on("connect")
    def connect(sid, environ, auth):
        seen[auth["who"]] = connecting(auth["eio"])
        if auth["who"] == "refused":
            raise socketio.exceptions.ConnectionRefusedError("no")

    for who in ("accepted", "refused"):
        eio_sid = f"eio-{who}"
        socketio.Server._handle_eio_connect(sio, eio_sid, {})
        assert not connecting(eio_sid)  # no CONNECT yet
        socketio.Server._handle_eio_message(sio, eio_sid,
                                            "0" + json.dumps({"who": who, "eio": eio_sid}))
    assert seen == {"accepted": True, "refused": True}
    assert connecting("eio-accepted") and not connecting("eio-refused")
