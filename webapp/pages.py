"""The pages a person opens: `/`, what the service is, with its links, and `/demo`, a page
that sends messages through `tributary.js` and shows each one on its way to the database.

Both are plain HTML with their script and styles in `webapp/static/` (no build step), served
with a Content-Security-Policy that allows nothing from elsewhere.
"""

from __future__ import annotations

from flask import Blueprint, Response, render_template

bp = Blueprint("pages", __name__)

#: Pages load scripts, styles and connections from their own origin only.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; "
                           "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
                           "base-uri 'none'; form-action 'self'")


@bp.get("/")
def index() -> Response:
    return _page("index.html")


@bp.get("/demo")
def demo() -> Response:
    return _page("demo.html")


def _page(template: str) -> Response:
    response = Response(render_template(template), mimetype="text/html")
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response
