"""Signing in and out of the operator dashboard: `/admin/login` and `/admin/logout`.

The same accounts and the same login throttle as `POST /api/auth/login`: attempts count per
client address and failures per username, checked before any password is hashed. Any enabled
account may sign in; the dashboard then answers 403 to anyone but viewers and admins.
"""

from __future__ import annotations

from flask import Blueprint, Response, render_template, request
from werkzeug.utils import redirect
from wtforms import PasswordField, StringField

from engine.keys import USER_ID_PATTERN
from webapp import offenders
from webapp.admin.access import (
    ActionForm,
    csrf_refused,
    current_operator,
    safe_next,
    sign_in,
    sign_out,
)
from webapp.extensions import services
from webapp.users import authenticate

bp = Blueprint("operator_login", __name__, url_prefix="/admin")


class LoginForm(ActionForm):
    username = StringField("Username")
    password = PasswordField("Password")


def _page(form: LoginForm, status: int, error: str | None = None,
          retry_after: int | None = None) -> Response:
    response = Response(render_template("operator/login.html", form=form, error=error,
                                        next=request.args.get("next", "")), status=status)
    if retry_after:  # throttled: closed after the answer, an offence, as the API's (auth.py)
        response.headers["Retry-After"] = str(retry_after)
        response.headers["Connection"] = "close"
        offenders.offence(request.remote_addr)
    return response


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response:
    form = LoginForm(request.form)
    if request.method == "GET":
        if current_operator() is not None:
            return redirect(safe_next(request.args.get("next")))  # type: ignore[return-value]
        return _page(form, 200)
    if not form.validate():
        return _page(form, 400, "This form expired; please sign in again.")
    username, password = form.username.data or "", form.password.data or ""
    throttle = services().throttle
    named = username if USER_ID_PATTERN.fullmatch(username) else None
    wait = throttle.attempt(request.remote_addr, named)
    if wait:
        return _page(form, 429, f"Too many attempts; try again in {wait} s.", wait)
    user = authenticate(services().db, username, password)
    if user is None:
        if named is not None:
            throttle.failed(named)
        return _page(form, 401, "Invalid username or password.")
    sign_in(user)
    return redirect(safe_next(request.args.get("next")))  # type: ignore[return-value]


@bp.post("/logout")
def logout() -> Response:
    if not ActionForm(request.form).validate():
        return csrf_refused()
    sign_out()
    return redirect("/admin/login")  # type: ignore[return-value]
