"""Request ids and the access log of a web process.

Every HTTP request (the API, `/metrics`, socket.io's polling and websocket handshakes) gets a
request id: the client's `X-Request-ID` when it is a sane token, a new one otherwise. It is
bound to the request's log context, so every line logged while the request is handled carries
it (for a websocket, every line of that connection), and sent back in the response's
`X-Request-ID`. When the request ends, one access line says what it was: method, path (never
the query string, where a client may put its token), status, duration, remote address, and the
user when a token was verified. A websocket's line is written when the connection ends; its
status is 101.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterable
from time import perf_counter
from typing import Any

import gevent
from flask import Flask, Response
from flask_jwt_extended import get_jwt
from structlog.contextvars import bind_contextvars, clear_contextvars

access_log = logging.getLogger("webapp.access")

#: A client's request id is kept when it looks like one (no spaces, no control characters).
REQUEST_ID = re.compile(r"[A-Za-z0-9._:+=/-]{1,128}")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class RequestLog:
    """WSGI middleware, outermost: request id in, access line out."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        given = environ.get("HTTP_X_REQUEST_ID", "")
        request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        environ["HTTP_X_REQUEST_ID"] = request_id
        clear_contextvars()  # a keep-alive connection handles its requests one by one
        bind_contextvars(request_id=request_id)
        started = perf_counter()
        status: list[str] = []

        def start(line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status[:] = [line]
            headers.append(("X-Request-ID", request_id))
            return start_response(line, headers, exc_info)

        try:
            return self.app(environ, start)
        finally:
            code = (int(status[0].split(" ", 1)[0]) if status
                    else 101 if "wsgi.websocket" in environ else 0)
            elapsed = (perf_counter() - started) * 1000
            method, path = environ.get("REQUEST_METHOD", "?"), environ.get("PATH_INFO", "")
            access_log.info("%s %s %d %.1fms", method, path, code, elapsed,
                            extra={"method": method, "path": path, "status": code,
                                   "duration_ms": round(elapsed, 2),
                                   "remote": environ.get("REMOTE_ADDR")})
            clear_contextvars()


def init_app(app: Flask) -> None:
    """Name the user of a request whose token was verified, for its access line."""

    @app.after_request
    def name_user(response: Response) -> Response:
        try:
            user = get_jwt().get("sub")
        except RuntimeError:  # no token was verified for this request
            return response
        if user:
            bind_contextvars(user=user)
        return response

    app.wsgi_app = RequestLog(app.wsgi_app)  # type: ignore[method-assign]


def log_gevent_errors() -> None:
    """Send what gevent's hub would print to stderr (a greenlet that died, an error in the
    WSGI server) through logging instead, so that it is formatted and scrubbed like the rest."""
    hub = gevent.get_hub()
    log = logging.getLogger("gevent")

    def print_exception(context: Any, kind: Any, value: Any, tb: Any) -> None:
        log.error("%s failed", type(context).__name__ if context is not None else "the hub",
                  exc_info=(kind, value, tb) if value is not None else None)

    hub.print_exception = print_exception
