"""The API's OpenAPI 3 document, generated from the code by spectree: `/api/openapi.json`, and
a documentation page at `/api/docs` drawn by ReDoc, served from `static/vendor/redoc` (nothing
from a CDN).

Every API route is decorated with `spec.validate(...)`, naming its query model (validated) and
its body and response models (documentation: the body is validated item by item by the route
itself, so that a batch answers per item, and responses are not re-validated on every call).
A query that does not fit its model is answered 422 by the error handler, naming the field:
`{"error": "<field>: <reason>", "field": "<field>"}`, like every other refusal.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from pydantic import BaseModel
from spectree import SecurityScheme, SpecTree
from spectree.models import SecureType, SecuritySchemeData

from engine.errors import ValidationError

REDOC_VERSION = "2.5.2"

_DOCS_PAGE = """<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>Tributary API</title>
    <style>body {{ margin: 0; padding: 0; }}</style>
  </head>
  <body>
    <redoc spec-url="{spec_url}"></redoc>
    <script src="/static/vendor/redoc/redoc.standalone.js"></script>
  </body>
</html>"""


class InvalidParameter(ValidationError):
    """A query parameter does not fit its model: 422 naming the field."""


def _refuse_invalid_query(_request: Any, _response: Any, error: Any, _instance: Any,
                          *_args: Any) -> None:
    """spectree's `before` hook: turn its validation error into Tributary's own."""
    if error is None:
        return
    first = error.errors()[0]
    field = ".".join(str(part) for part in first.get("loc", ())) or "query"
    reason = str(first.get("msg", "is invalid"))
    reason = reason.removeprefix("Value error, ")
    raise InvalidParameter(field, reason[:1].lower() + reason[1:])


spec = SpecTree(
    # `path` is where spectree would serve its own pages; it skips every route under it when
    # it builds the document, so it must not be "api". init_app serves the document itself.
    "flask", mode="strict", path="openapi", filename="openapi.json",
    title="Tributary API", version="2",
    description="Messages in (socket.io and HTTP), history and aggregates out. Authenticate "
    "with `POST /api/auth/login`, then send `Authorization: Bearer <access_token>`.",
    page_templates={"docs": _DOCS_PAGE},
    security_schemes=[SecurityScheme(name="bearer", data=SecuritySchemeData(
        type=SecureType.HTTP, scheme="bearer", bearer_format="JWT",
        description="an access token from POST /api/auth/login"))],
    before=_refuse_invalid_query,
)

#: The security requirement of routes that need an access token.
BEARER: dict[str, list[str]] = {"bearer": []}


class Error(BaseModel):
    """Every refusal: what was wrong, and for a query parameter, which."""

    error: str
    field: str | None = None


def errors(*statuses: int) -> dict[str, type[BaseModel]]:
    """The error answers of a route, for `spectree.Response(**errors(401, 403))`."""
    return {f"HTTP_{status}": Error for status in statuses}


def init_app(app: Flask) -> None:
    """Serve the document and its page (call after every API blueprint is registered)."""
    spec.app = app
    app.add_url_rule("/api/openapi.json", "openapi_document",
                     lambda: app.json.response(spec.spec))
    app.add_url_rule("/api/docs", "openapi_docs",
                     lambda: _DOCS_PAGE.format(spec_url="/api/openapi.json"))
