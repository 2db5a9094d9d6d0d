"""Helpers for the operator dashboard tests: an HTTP client that signs in at /admin/login the
way a browser does, keeps the session cookie, and sends each action with the CSRF token the
dashboard's own pages carry.

The web processes of the tests run in production mode, so the session cookie is `Secure`.
Python's cookie jar would not send a Secure cookie over plain http://127.0.0.1, so the client
keeps the cookie itself (a browser treats 127.0.0.1 as a secure context and sends it).
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import requests
import sqlalchemy as sa

from engine.schema import audit_log
from tests.conftest import Backend

PASSWORD = "password-for-tests"
COOKIE = "tributary_session"
_TOKEN = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def ensure_account(backend: Backend, username: str, role: str) -> None:
    from engine.errors import UsernameTaken
    from webapp.users import create_user, set_role

    with contextlib.suppress(UsernameTaken):
        create_user(backend.db, username, PASSWORD, role=role)
    set_role(backend.db, username, role, redis=backend.redis)


class Operator:
    """One browser-like session of the dashboard."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()
        self.cookie: str | None = None
        self.set_cookie_header = ""
        self.signed_in = False

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        if self.cookie is not None:
            headers["Cookie"] = f"{COOKIE}={self.cookie}"
        kwargs.setdefault("allow_redirects", False)
        kwargs.setdefault("timeout", 30)
        response = self.http.request(method, self.url + path, headers=headers, **kwargs)
        found = response.cookies.get(COOKIE)
        if found is not None:
            self.cookie = found or None
            self.set_cookie_header = response.headers.get("Set-Cookie", "")
        return response

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def token(self, page: str | None = None) -> str:
        """A CSRF token, from a page of the dashboard as a browser would get it (the login
        page, or once signed in the audit log)."""
        page = page or ("/admin/audit/" if self.cookie and self.signed_in else "/admin/login")
        response = self.get(page)
        match = _TOKEN.search(response.text)
        assert match, f"no CSRF token on {page} ({response.status_code})"
        return match.group(1)

    def post(self, path: str, data: dict[str, Any] | None = None, *, csrf: bool = True,
             token_page: str | None = None, **kwargs: Any) -> requests.Response:
        form = dict(data or {})
        if csrf:
            form["csrf_token"] = self.token(token_page)
        return self.request("POST", path, data=form, **kwargs)

    def sign_in(self, username: str, password: str = PASSWORD) -> requests.Response:
        response = self.post("/admin/login", {"username": username, "password": password},
                             token_page="/admin/login")
        self.signed_in = response.status_code == 302
        return response


def signed_in(url: str, username: str) -> Operator:
    operator = Operator(url)
    response = operator.sign_in(username)
    assert response.status_code == 302, response.text
    return operator


def audit_rows(db: sa.engine.Engine) -> list[Any]:
    with db.connect() as conn:
        return list(conn.execute(sa.select(audit_log).order_by(audit_log.c.id)).all())
