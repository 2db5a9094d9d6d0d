"""JSON errors: every error response of the API comes from `error_response`."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from engine.errors import RedisUnavailable, Unavailable, ValidationError
from webapp.extensions import services
from webapp.openapi import InvalidParameter


def error_response(status: int, message: str, **extra: Any) -> tuple[Response, int]:
    """`{"error": message, ...extra}` with the given HTTP status."""
    return jsonify({"error": message, **extra}), status


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        return error_response(exc.code or 500, (exc.description or exc.name).rstrip("."))

    @app.errorhandler(ValidationError)
    def invalid(exc: ValidationError) -> tuple[Response, int]:
        return error_response(400, str(exc))

    @app.errorhandler(InvalidParameter)
    def invalid_parameter(exc: InvalidParameter) -> tuple[Response, int]:
        return error_response(422, str(exc), field=exc.field)

    @app.errorhandler(Unavailable)
    def unavailable(exc: Unavailable) -> tuple[Response, int]:
        if isinstance(exc, RedisUnavailable):
            services().gateway.redis_failed(exc)  # logged once per outage, not per request
        return error_response(503, "unavailable")

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:
        app.logger.exception("unhandled error: %s", exc)
        return error_response(500, "internal error")
