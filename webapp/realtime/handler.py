"""The gevent WSGI handler of a web process: HTTP requests held to limits a hostile client cannot
get past, and the websocket handshake.

gevent's pywsgi has no timeouts at all, reads any number of headers of up to 64 KiB each, and
refuses what it cannot parse with an empty 400, an ERROR line and sometimes a traceback. Here:

- The request line and headers must arrive within HTTP_HEADER_TIMEOUT of the moment the server
  starts waiting for them (a new connection, or the next request on a keep-alive one), so a
  slowloris client, sending its headers a byte at a time, holds nothing for long (408). A
  connection that sends nothing at all is closed then too, without a word.
- The header block may hold MAX_HEADER_BYTES (431); the request line 8 KiB, gevent's own limit
  (414): a 100 KB token is refused before anything else reads it.
- A body announced (Content-Length) over MAX_FRAME_BYTES is refused before it is read (413), on
  every path: the API and engine.io's long-polling alike. A body must arrive whole within
  HTTP_BODY_TIMEOUT of its headers, however slowly it trickles; past that, reading it fails
  (`ClientTooSlow`) and the connection is closed once the request is answered.
- Every refusal is JSON, `{"error": "<what was too large or too slow>"}`, with `Connection:
  close`, and one warning line (these clients are anonymous: rate-limited, webapp/offenders.py);
  the server then reads and drops, for a moment, what the client was still sending, so that it
  sees the answer rather than a reset.

- Every request is counted against its client address (webapp/admission.py): over the rate, a
  `429` (or, behind proxies, a `503` for a new connection over its rate), written without the
  application, and the connection closed.

Past the handshake, a websocket belongs to `webapp.realtime.transport.Connection`; the origin
check and TCP_NODELAY are applied here, at the upgrade.
"""

from __future__ import annotations

import contextlib
import email.parser
import logging
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, cast

import gevent
from gevent.pywsgi import MAX_REQUEST_LINE, Input, OldMessage
from geventwebsocket.handler import WebSocketHandler

from engine.errors import ClientTooSlow
from engine.settings import Settings
from webapp import offenders
from webapp.admission import CONNECTIONS, REQUESTS, Admission, forwarded_address, refusal
from webapp.jsonmod import dumpb
from webapp.realtime.internals import upgraded_websocket

log = logging.getLogger(__name__)

#: After a refusal, how long and how much of what the client is still sending is read and
#: dropped before the connection is closed (closing with unread data would reset it, and the
#: client might never see the answer).
LINGER_SECONDS = 2.0
LINGER_BYTES = 1 << 20
#: Request headers accepted in one request (what Python's own HTTP parser allows).
MAX_HEADER_LINES = 100

OriginCheck = Callable[[str | None, dict[str, Any]], bool]


@dataclass(frozen=True)
class Limits:
    """What one HTTP request may take; see the module docstring."""

    header_timeout: float
    body_timeout: float
    max_header_bytes: int
    max_body_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(settings.HTTP_HEADER_TIMEOUT, settings.HTTP_BODY_TIMEOUT,
                   settings.MAX_HEADER_BYTES, settings.MAX_FRAME_BYTES)


class _Refused(Exception):
    """A request refused before the application saw it: its status and what to tell the
    client."""

    def __init__(self, status: HTTPStatus, error: str) -> None:
        super().__init__(error)
        self.status, self.error = status, error


class _Shed(_Refused):
    """A request refused because its address is over its rate (webapp/admission.py)."""

    def __init__(self, status: HTTPStatus, error: str, wait: float) -> None:
        super().__init__(status, error)
        self.wait = wait


class _HeaderReader:
    """The connection's reader as gevent's header parser sees it: a header block over `limit`
    bytes, or of more than MAX_HEADER_LINES lines, is refused (431) instead of read on."""

    __slots__ = ("_rfile", "left", "limit", "lines")

    def __init__(self, rfile: Any, limit: int) -> None:
        self._rfile, self.left, self.limit, self.lines = rfile, limit, limit, 0

    def readline(self, size: int = -1) -> bytes:
        # At most one byte past the limit: an over-long block is known without being read.
        line: bytes = self._rfile.readline(self.left + 1 if size < 0 else
                                           min(size, self.left + 1))
        self.left -= len(line)
        self.lines += 1
        if self.left < 0:
            raise _Refused(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                           f"request headers over {self.limit} bytes")
        if self.lines > MAX_HEADER_LINES and line not in (b"\r\n", b"\n", b""):
            raise _Refused(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                           f"more than {MAX_HEADER_LINES} request headers")
        return line


#: A header name as the email parser behind http.client.parse_headers accepts one.
_HEADER_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")
#: Longest header line http.client reads (its _MAXLINE).
_MAX_HEADER_LINE = 65536


def parse_headers(fp: Any) -> OldMessage:
    """The headers of a request, read from `fp` up to the blank line: what gevent's
    `headers_factory` (http.client.parse_headers with the email package's parser) returns, at
    a fraction of its cost for the usual block of plain `Name: value` lines. Anything else
    (folded lines, a name the email parser would not take, a stray CR, a block cut short) is
    given to that parser, so the result is always the same."""
    lines = []
    while True:
        line = fp.readline(_MAX_HEADER_LINE + 1)
        if len(line) > _MAX_HEADER_LINE:
            message = OldMessage()
            message.status = "Line too long"  # as headers_factory answers http.client's error
            return message
        lines.append(line)
        if line in (b"\r\n", b"\n", b""):
            break
    headers = []
    for raw in lines[:-1]:
        text = raw.decode("iso-8859-1").removesuffix("\n").removesuffix("\r")
        name, colon, value = text.partition(":")
        if not raw.endswith(b"\n") or not colon or "\r" in text or \
                not _HEADER_NAME.fullmatch(name):
            return cast(OldMessage, email.parser.Parser(_class=OldMessage).parsestr(
                b"".join(lines).decode("iso-8859-1")))
        headers.append((name, value.lstrip(" \t")))
    message = OldMessage()
    for name, value in headers:
        message.set_raw(name, value)
    message.set_payload("")
    return message


class _TimedInput(Input):  # type: ignore[misc]
    """gevent's request body (`wsgi.input`), to be read whole by a deadline: a read past it
    raises `ClientTooSlow`, and the connection closes once the request is answered."""

    __slots__ = ("_deadline", "_expired", "_handler")

    def __init__(self, handler: Any, body: Input, timeout: float) -> None:
        super().__init__(body.rfile, body.content_length, socket=body.socket,
                         chunked_input=body.chunked_input)
        self._handler = handler
        self._expired: ClientTooSlow | None = None
        self._deadline = (time.monotonic() + timeout, timeout)

    def read(self, length: int | None = None) -> bytes:
        if not self.chunked_input and self.position >= (self.content_length or 0):
            return b""  # the whole body is in (or there is none): no timer needed
        with self._in_time():
            return super().read(length)  # type: ignore[no-any-return]

    def readline(self, size: int | None = None) -> bytes:
        if not self.chunked_input and self.position >= (self.content_length or 0):
            return b""
        with self._in_time():
            return super().readline(size)  # type: ignore[no-any-return]

    @contextlib.contextmanager
    def _in_time(self) -> Iterator[None]:
        if self._expired is not None:  # what is left of the body is never read
            raise self._expired
        deadline, timeout = self._deadline
        error = ClientTooSlow(f"the request body did not arrive within the {timeout:g} s "
                              "allowed")
        try:
            with gevent.Timeout(max(0.0, deadline - time.monotonic()), error):
                yield
        except ClientTooSlow as exc:
            if exc is error:
                self._expired = error
                self._handler.body_timed_out(error)
            raise


def handler_class(limits: Limits, allowed_origin: OriginCheck | None = None,
                  refused: Callable[[str], None] | None = None,
                  admission: Admission | None = None) -> type[WebSocketHandler]:
    """A gevent WSGI handler class holding requests to `limits` and speaking websocket,
    refusing the handshake of a browser whose origin `allowed_origin` does not accept;
    `refused` is told the path (and query) of every request refused for its size or speed;
    `admission` counts every request against its address (and, behind proxies, the first of
    each connection as a new connection)."""

    class TributaryHandler(WebSocketHandler):  # type: ignore[misc]
        # The methods below override gevent's WSGIHandler hooks (gevent 26.9): what each does
        # there is said where it is overridden.
        wsgi_input: Any
        refusal: tuple[HTTPStatus, str] | None = None
        refusal_detail: str | None = None
        shed: _Shed | None = None
        #: Requests read on this connection so far.
        requests_read = 0

        # --- the request line and headers, within the header timeout ------------------------

        def handle_one_request(self) -> Any:
            # gevent: read the request line and headers, run the application; a request it
            # refuses comes back as (status, raw response), which it would send as is.
            self.header_timer = gevent.Timeout(offenders.spread(limits.header_timeout),
                                               ClientTooSlow(
                f"the request line and headers did not arrive within the "
                f"{limits.header_timeout:g} s allowed"))
            self.header_timer.start()
            try:
                result = super().handle_one_request()
            finally:
                self.header_timer.cancel()
            if isinstance(result, tuple):
                if self.shed is not None:
                    self._shed(self.shed)
                else:
                    self._refuse(*self._refusal(result[0]))
                return None
            return result

        def read_requestline(self) -> str:
            # gevent: one line of at most MAX_REQUEST_LINE bytes ("" ends the connection).
            try:
                return super().read_requestline()  # type: ignore[no-any-return]
            except ClientTooSlow:
                # Nothing (or only part of a request line) came: an idle keep-alive
                # connection, a browser's unused preconnection, or a client too slow to
                # say anything. Closed without an answer, and without a warning.
                log.debug("closing the idle connection of %s", self.client_address)
                return ""

        def read_request(self, raw_requestline: str) -> bool:
            # gevent: parse the request line and read the headers (with MessageClass).
            ok = super().read_request(raw_requestline)
            self.header_timer.cancel()
            if admission is not None and ok:
                self._admit(admission)
            length = self.content_length
            if length is not None and length > limits.max_body_bytes:
                raise _Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               f"request body over {limits.max_body_bytes} bytes")
            return ok  # type: ignore[no-any-return]

        def _admit(self, admission: Admission) -> None:
            """Count this request, and behind proxies the connection's first as a new
            connection, against the client's address; over a limit, it is shed."""
            self.requests_read += 1
            address = self.client
            if not address:
                return
            if self.requests_read == 1 and not admission.at_accept:
                wait = admission.take(address, CONNECTIONS)
                if wait:
                    raise _Shed(HTTPStatus.SERVICE_UNAVAILABLE,
                                "too many new connections from this address", wait)
            wait = admission.take(address, REQUESTS)
            if wait:
                raise _Shed(HTTPStatus.TOO_MANY_REQUESTS, "too many requests from this address",
                            wait)

        def MessageClass(self, fp: Any, *args: Any) -> Any:
            # gevent: parse the headers from `fp` with http.client.parse_headers.
            return parse_headers(_HeaderReader(fp, limits.max_header_bytes))

        def _handle_client_error(self, ex: Exception) -> tuple[str, bytes]:
            # gevent: called with what read_request raised; logs an ERROR line (and a
            # traceback for anything but a ValueError) and returns an empty 400 to send. Here
            # the refusal is noted, and sent by handle_one_request.
            if isinstance(ex, _Shed):
                self.shed = ex
            elif isinstance(ex, _Refused):
                self.refusal = (ex.status, ex.error)
            elif isinstance(ex, ClientTooSlow):
                self.refusal = (HTTPStatus.REQUEST_TIMEOUT, str(ex))
            else:
                self.refusal = (HTTPStatus.BAD_REQUEST, "malformed HTTP request")
                self.refusal_detail = f"{type(ex).__name__}: {ex}"
            return ("400", b"")

        def _refusal(self, status: str) -> tuple[HTTPStatus, str]:
            if self.refusal is not None:
                return self.refusal
            if status == "414":
                return (HTTPStatus.REQUEST_URI_TOO_LONG,
                        f"request line over {MAX_REQUEST_LINE} bytes")
            return HTTPStatus.BAD_REQUEST, "malformed HTTP request"

        def _refuse(self, status: HTTPStatus, error: str) -> None:
            """Answer `error` as JSON, then close the connection gently (module docstring)."""
            detail = self.refusal_detail
            offenders.warn(log, None, "refused a request from %s: %s (%d)%s", self.peer, error,
                           status.value, f" ({detail:.120})" if detail else "")
            offenders.offence(self.client)
            if refused is not None and self.path:
                refused(self.path)
            body = dumpb({"error": error})
            response = (f"HTTP/1.1 {status.value} {status.phrase}\r\n"
                        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                        "Connection: close\r\n\r\n").encode() + body
            with gevent.Timeout(LINGER_SECONDS, False):
                try:
                    self.socket.sendall(response)
                    self.socket.shutdown(socket.SHUT_WR)
                    dropped = 0
                    while dropped < LINGER_BYTES:
                        chunk = self.socket.recv(65536)
                        if not chunk:
                            break
                        dropped += len(chunk)
                except OSError:
                    pass

        def _shed(self, shed: _Shed) -> None:
            """Answer a request over its address's rate: `Retry-After`, and the connection
            closed (going on costs a new one). One line, within the anonymous limit."""
            offenders.warn(log, None, "refused a request from %s: %s (%d)", self.peer,
                           shed.error, shed.status.value)
            with contextlib.suppress(OSError):
                self.socket.sendall(refusal(f"{shed.status.value} {shed.status.phrase}",
                                            shed.error, shed.wait))

        @property
        def client(self) -> str | None:
            """The client's address as admission counts it: the peer's, or behind trusted
            proxies the forwarded one (None before the headers are read, or when they hold
            none)."""
            if admission is None or not admission.trusted_proxy_hops:
                return self.peer
            headers = getattr(self, "headers", None)
            return forwarded_address(headers.get("X-Forwarded-For") if headers else None,
                                     admission.trusted_proxy_hops)

        @property
        def peer(self) -> str:
            address = self.client_address
            return str(address[0] if isinstance(address, tuple) else address)

        # --- the body, within the body timeout ------------------------------------------------

        def get_environ(self) -> dict[str, Any]:
            # gevent: the WSGI environment, with the body as an Input (the connection's reader
            # itself for an upgrade).
            environ: dict[str, Any] = super().get_environ()
            if environ["wsgi.input"] is self.wsgi_input:  # not an upgrade: a body may follow
                self.wsgi_input = environ["wsgi.input"] = _TimedInput(
                    self, self.wsgi_input, limits.body_timeout)
            return environ

        def body_timed_out(self, error: ClientTooSlow) -> None:
            """The request body missed its deadline: whatever the application answers, the
            connection closes after it (what is left of the body is never read)."""
            self.close_connection = True
            offenders.warn(log, None, "refused a request from %s: %s", self.peer, error)
            offenders.offence(self.client)
            if refused is not None and self.path:
                refused(self.path)

        def run_application(self) -> None:
            # gevent: call the application and send its response. An application that lets
            # the body's timeout through (they catch it: engine.io's sessions, werkzeug) is
            # answered 408 here rather than with gevent's traceback and 500.
            try:
                super().run_application()
            except ClientTooSlow as exc:
                self.close_connection = True
                if not self.headers_sent:
                    self.start_response("408 Request Timeout",
                                        [("Content-Type", "application/json")],
                                        exc_info=(type(exc), exc, exc.__traceback__))
                    self.write(dumpb({"error": str(exc)}))

        # --- the websocket handshake --------------------------------------------------------

        def upgrade_connection(self) -> Any:
            origin = self.environ.get("HTTP_ORIGIN")
            if allowed_origin is not None and not allowed_origin(origin, self.environ):
                self.start_response("403 Forbidden", [("Content-Type", "text/plain")])
                return [b"Not an accepted origin."]
            result = super().upgrade_connection()
            if upgraded_websocket(self) is not None:
                # Acks are small frames written one after another: without TCP_NODELAY,
                # Nagle's algorithm holds each back until the client's (delayed) ACK of the
                # previous one arrives, up to 40 ms per ack.
                self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return result

    return TributaryHandler

