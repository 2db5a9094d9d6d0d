"""Hostile clients by hand: engine.io sessions spoken raw on both transports, raw HTTP over a
socket, and readers of what the web process logged about them.

A hostile client does not use a socket.io library: it sends whatever bytes it likes. These
helpers send exactly what a test says and report exactly what came back, including the server
closing the connection.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import requests
import websocket

from tests.conftest import WebServer, wait_until

#: What separates the packets of a long-polling payload (engine.io v4).
RECORD_SEPARATOR = "\x1e"


def engineio_url(url: str, transport: str, sid: str | None = None) -> str:
    query = f"EIO=4&transport={transport}" + (f"&sid={sid}" if sid else "")
    base = url.replace("http://", "ws://") if transport == "websocket" else url
    return f"{base}/socket.io/?{query}"


class WebsocketSession:
    """An engine.io session on a websocket, spoken by hand."""

    transport = "websocket"

    def __init__(self, url: str, timeout: float = 10, source: str | None = None) -> None:
        """`source`: the local address to connect from (on loopback, any 127.0.0.0/8 one)."""
        address = urlsplit(url)
        sock = socket.create_connection((address.hostname, address.port), timeout=timeout,
                                        source_address=(source, 0) if source else None)
        self.ws = websocket.create_connection(engineio_url(url, "websocket"), timeout=timeout,
                                              socket=sock)
        opening = self.ws.recv()
        assert opening.startswith("0{"), opening
        self.sid = json.loads(opening[1:])["sid"]

    def send(self, text: str) -> None:
        self.ws.send(text)

    def send_all(self, texts: list[str]) -> None:
        """Send every text as its own frame, in one write: one burst for the server to read."""
        frames = b"".join(websocket.ABNF.create_frame(text, websocket.ABNF.OPCODE_TEXT)
                          .format() for text in texts)
        self.ws.sock.sendall(frames)

    def receive(self, timeout: float = 10) -> str | None:
        """The next engine.io packet the server sent (pings answered on the way), or None once
        the server closed the connection."""
        self.ws.settimeout(timeout)
        while True:
            try:
                text = self.ws.recv()
            except (websocket.WebSocketConnectionClosedException, ConnectionError):
                return None
            if text == "":  # a close frame
                return None
            if text == "2":
                self.ws.send("3")
                continue
            return text if isinstance(text, str) else text.decode()

    def join(self, token: str | None) -> str:
        """Send the socket.io CONNECT with `token`; the server's answer (40… or 44…)."""
        self.send("40" + (json.dumps({"token": token}) if token is not None else ""))
        answer = self.receive()
        assert answer is not None, "closed instead of answering the CONNECT"
        return answer

    def closed_by_server(self, timeout: float = 10) -> bool:
        """Read until the server closes the connection; False if it is still open after
        `timeout` seconds (a read timing out)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.receive(max(0.05, deadline - time.monotonic())) is None:
                    return True
            except websocket.WebSocketTimeoutException:
                return False
        return False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()


class PollingSession:
    """An engine.io session on HTTP long-polling, spoken by hand."""

    transport = "polling"

    def __init__(self, url: str, timeout: float = 10) -> None:
        self.url = url
        self.http = requests.Session()
        opening = self.http.get(engineio_url(url, "polling"), timeout=timeout)
        assert opening.status_code == 200 and opening.text.startswith("0{"), opening.text
        self.sid = json.loads(opening.text[1:])["sid"]
        self.pending: list[str] = []
        self.over = False

    @property
    def endpoint(self) -> str:
        return engineio_url(self.url, "polling", self.sid)

    def post(self, body: str | bytes, timeout: float = 10) -> requests.Response:
        return self.http.post(self.endpoint, data=body, timeout=timeout,
                              headers={"Content-Type": "text/plain;charset=UTF-8"})

    def send(self, text: str) -> None:
        answer = self.post(text)
        assert answer.status_code == 200, (answer.status_code, answer.text)

    def send_all(self, texts: list[str]) -> requests.Response:
        """Every packet in one payload, as a browser flushes its buffer."""
        return self.post(RECORD_SEPARATOR.join(texts))

    def fetch(self, timeout: float = 10) -> requests.Response:
        return self.http.get(self.endpoint, timeout=timeout)

    def receive(self, timeout: float = 10) -> str | None:
        """The next packet the server sent (pings answered on the way, one poll at a time), or
        None once the session is over."""
        while not self.pending:
            if self.over:
                return None
            answer = self.fetch(timeout)
            if answer.status_code != 200:
                self.over = True
                continue
            for packet in answer.text.split(RECORD_SEPARATOR):
                if packet == "2":
                    self.post("3")
                elif packet == "1":  # CLOSE
                    self.over = True
                elif packet != "6":  # NOOP
                    self.pending.append(packet)
        return self.pending.pop(0)

    def join(self, token: str | None) -> str:
        self.send("40" + (json.dumps({"token": token}) if token is not None else ""))
        answer = self.receive()
        assert answer is not None, "closed instead of answering the CONNECT"
        return answer

    def closed_by_server(self, timeout: float = 10) -> bool:
        """Poll until the server ends the session; False if it is still going after `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.receive(max(0.05, deadline - time.monotonic())) is None:
                    return True
            except requests.Timeout:
                return False
        return False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.post("1", timeout=2)
        self.http.close()


SESSIONS = {"websocket": WebsocketSession, "polling": PollingSession}


def open_session(url: str, transport: str) -> WebsocketSession | PollingSession:
    return SESSIONS[transport](url)


@contextlib.contextmanager
def joined_session(web: WebServer, transport: str, user: str
                   ) -> Iterator[WebsocketSession | PollingSession]:
    """A raw session of `user`, joined to the namespace and counted in Redis."""
    session = open_session(web.url, transport)
    try:
        answer = session.join(web.token(user))
        assert answer.startswith("40{"), answer
        yield session
    finally:
        session.close()


# --- raw HTTP -------------------------------------------------------------------------------------

def raw_connection(web: WebServer, timeout: float = 10, source: str | None = None
                   ) -> socket.socket:
    """A TCP connection to `web`, from `source` (a loopback address) when given."""
    sock = socket.create_connection(("127.0.0.1", web.port), timeout=timeout,
                                    source_address=(source, 0) if source else None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_closed(sock: socket.socket, timeout: float = 10) -> tuple[bytes, bool]:
    """Everything the server sends until it closes the connection, and whether it did close it
    within `timeout` seconds."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    received = b""
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return received, False
        except ConnectionResetError:
            return received, True
        if not chunk:
            return received, True
        received += chunk
    return received, False


def trickle(sock: socket.socket, data: bytes, interval: float, limit: float) -> bool:
    """Send `data` a byte every `interval` seconds, as a slowloris client does, until the server
    answers or closes the connection (True), or `limit` seconds have passed (False)."""
    started = time.monotonic()
    for byte in data:
        if time.monotonic() - started > limit:
            return False
        try:
            sock.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return True
        readable, _, _ = select.select([sock], [], [], interval)
        if readable:
            return True
    return False


def send_and_read(web: WebServer, request: bytes, timeout: float = 10,
                  source: str | None = None) -> tuple[bytes, bool]:
    """Send a whole request (ignoring a reset while sending: the server may answer before it
    has read everything) and read the answer until the server closes the connection."""
    with raw_connection(web, timeout, source) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        return read_until_closed(sock, timeout)


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body) of one HTTP/1.1 response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def json_error(raw: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, JSON body, headers) of a refusal; fails unless the body is JSON."""
    status, headers, body = parse_response(raw)
    assert headers.get("content-type", "").startswith("application/json"), (headers, body)
    return status, json.loads(body), headers


# --- the web process's log ------------------------------------------------------------------------

def lines_with(web: WebServer, text: str) -> list[str]:
    return [line for line in web.process.log().splitlines() if text in line]


def wait_for_line(web: WebServer, text: str, count: int = 1, timeout: float = 10) -> list[str]:
    """Wait until the log holds at least `count` lines containing `text`."""
    return wait_until(lambda: len(found := lines_with(web, text)) >= count and found, timeout,
                      what=f"{count} log line(s) with {text!r}")


def assert_no_errors_logged(web: WebServer) -> None:
    """Nothing at ERROR level, and no traceback: a hostile client is a warning, not a fault."""
    log = web.process.log()
    assert "Traceback" not in log, log
    errors = [line for line in log.splitlines() if " ERROR " in line or "CRITICAL" in line]
    assert not errors, errors
