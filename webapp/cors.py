"""CORS for the REST API, from the same CORS_ORIGINS setting as the socket.io endpoint, and a
refusal a foreign page can read."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from flask import Flask, Response, request

from webapp.jsonmod import dumpb

ALLOWED_HEADERS = "Authorization, Content-Type"
ALLOWED_METHODS = "GET, POST, OPTIONS"
#: What a page from an origin not in CORS_ORIGINS is told when it tries to connect.
ORIGIN_REFUSED = "origin not allowed"

#: Whether a browser origin may connect, given the request's WSGI environ.
OriginCheck = Callable[[str | None, dict[str, Any]], bool]


def origin_checker(origins: Sequence[str]) -> OriginCheck:
    """Whether a browser origin may connect: a configured one, or the server's own origin
    (pages served by Tributary itself). Requests without an Origin header are not browsers."""
    allow_any = "*" in origins
    allowed = set(origins)

    def allowed_origin(origin: str | None, environ: dict[str, Any]) -> bool:
        if origin is None or allow_any or origin in allowed:
            return True
        own = f"{environ.get('wsgi.url_scheme', 'http')}://{environ.get('HTTP_HOST', '')}"
        return origin == own

    return allowed_origin


def refuse_foreign_origins(wsgi_app: Callable[..., Any], allowed_origin: OriginCheck,
                           socketio_path: str = "/socket.io/") -> Callable[..., Any]:
    """Wrap `wsgi_app` so that a socket.io handshake from a browser origin `allowed_origin`
    refuses is answered 403 `{"error": "origin not allowed"}` with CORS headers for that
    origin: the page can read why it may not connect (engine.io's own refusal carries no CORS
    headers, so the browser would show the page only a network error). Nothing else is shared
    with that origin. Websocket upgrades are refused before they reach the app
    (webapp/realtime/transport.py), with a status a page cannot read; a client that starts on
    long-polling, as socket.io's default does, hears the reason.
    """
    body = dumpb({"error": ORIGIN_REFUSED})

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        origin = environ.get("HTTP_ORIGIN")
        if origin and environ.get("PATH_INFO", "").startswith(socketio_path) \
                and not allowed_origin(origin, environ):
            start_response("403 Forbidden", [
                ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                ("Access-Control-Allow-Origin", origin), ("Vary", "Origin")])
            return [body]
        return wsgi_app(environ, start_response)

    return app


def init_app(app: Flask, origins: Sequence[str]) -> None:
    allow_any = "*" in origins
    allowed = set(origins)

    @app.before_request
    def preflight() -> Response | None:
        if request.method == "OPTIONS" and request.headers.get("Origin"):
            return app.make_default_options_response()
        return None

    @app.after_request
    def add_headers(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin and (allow_any or origin in allowed):
            response.headers["Access-Control-Allow-Origin"] = "*" if allow_any else origin
            response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
            response.headers["Access-Control-Max-Age"] = "600"
            response.vary.add("Origin")
        return response
