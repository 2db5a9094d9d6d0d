"""What every view of the operator dashboard shares: access control, the CSRF form its pages
embed, and keyset paging."""

from __future__ import annotations

import base64
from typing import Any

import orjson
from flask import Response, request
from flask_admin import AdminIndexView, BaseView
from werkzeug.utils import redirect

from webapp.admin.access import ActionForm, OperatorAccess, current_operator

#: Rows on one page of a list.
PAGE_SIZE = 100


class _Rendering:
    def render(self, template: str, **kwargs: Any) -> str:
        operator = current_operator()
        kwargs.setdefault("operator", operator)
        kwargs.setdefault("can_act", bool(operator and operator.is_admin))
        form = ActionForm()
        kwargs.setdefault("csrf_form", form)
        # The token as text, for pages with many small action forms: rendering the field
        # (WTForms' widget) for each of them costs more than the rest of the row.
        kwargs.setdefault("csrf_token", form.csrf_token.current_token)
        return super().render(template, **kwargs)  # type: ignore[misc, no-any-return]

    def back(self, default: str) -> Response:
        """Where an action returns: the page it was sent from, when it is one of ours."""
        target = request.form.get("back") or ""
        if not target.startswith("/admin") or target.startswith("//"):
            target = default
        return redirect(target)  # type: ignore[return-value]


class OperatorView(OperatorAccess, _Rendering, BaseView):
    """A page of the dashboard: viewers and admins only."""


class OperatorIndexView(OperatorAccess, _Rendering, AdminIndexView):
    """The dashboard's index page, with the same access rules."""


def encode_cursor(values: list[Any]) -> str:
    """An opaque, URL-safe cursor for keyset paging."""
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> list[Any] | None:
    """The values of a cursor, or None when it is absent or not one of ours."""
    if not cursor:
        return None
    try:
        values = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return None
    return values if isinstance(values, list) else None
