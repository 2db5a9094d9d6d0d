"""CORS for the REST API, from the same CORS_ORIGINS setting as the socket.io endpoint."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from flask import Flask, Response, request

ALLOWED_HEADERS = "Authorization, Content-Type"
ALLOWED_METHODS = "GET, POST, OPTIONS"


def origin_checker(origins: Sequence[str]) -> Callable[[str | None, dict[str, Any]], bool]:
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
