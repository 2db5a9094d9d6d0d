"""Who is looking at the operator dashboard, and what they may do.

Signing in starts a cookie session (Flask-Login over Flask's signed session cookie) with the
same accounts as the API. Each session carries an id of its own and the time it began, checked
on every request against the same revocation records as tokens (webapp/revocation.py): signing
out revokes the session's id, and disabling the account or revoking all of its tokens voids
every session begun before, on every web process at once, including the dashboard's live
socket.io connection, which is registered with the web process's live tokens under the
session's id. The account is read again on every request, so a role taken away counts from the
next click.

Roles: a `viewer` sees every page and may change nothing; an `admin` may also act; a signed-in
`user` gets 403. This is enforced here, per view (`OperatorAccess.is_accessible`) and per action
(`guard_action`), not by hiding buttons.
"""

from __future__ import annotations

import secrets
import time
from typing import Any
from urllib.parse import urlsplit

from flask import Response, render_template, request, session, url_for
from flask_admin.form import SecureForm
from flask_login import LoginManager, current_user, login_user, logout_user
from werkzeug.utils import redirect

from webapp import revocation
from webapp.admin import audit
from webapp.extensions import services
from webapp.users import User, find_user

#: Session fields beside Flask-Login's own: the session's id (revocable like a token's jti) and
#: the time it began (epoch seconds).
SESSION_ID, SESSION_BEGAN = "operator_sid", "operator_began"

login_manager = LoginManager()
login_manager.session_protection = "basic"


class Operator:
    """A signed-in account, as Flask-Login's `current_user`."""

    is_authenticated = True
    is_active = True
    is_anonymous = False

    def __init__(self, user: User, session_id: str, began: float, lifetime: float) -> None:
        self.user = user
        self.session_id = session_id
        self.began = began
        self.expires = began + lifetime

    def get_id(self) -> str:
        return self.user.username

    @property
    def username(self) -> str:
        return self.user.username

    @property
    def is_admin(self) -> bool:
        return self.user.is_admin

    @property
    def is_operator(self) -> bool:
        return self.user.is_operator


def session_lifetime() -> float:
    return services().settings.ADMIN_SESSION_HOURS * 3600


@login_manager.user_loader
def _load_operator(username: str) -> Operator | None:
    session_id, began = session.get(SESSION_ID), session.get(SESSION_BEGAN)
    if not isinstance(session_id, str) or not isinstance(began, (int, float)):
        return None
    lifetime = session_lifetime()
    if time.time() >= began + lifetime:
        return None
    user = find_user(services().db, username)
    if user is None or user.disabled:
        return None
    claims = {"jti": session_id, "sub": user.username, "iat": began}
    if revocation.revocation(services().redis, claims) is not None:
        return None
    return Operator(user, session_id, float(began), lifetime)


def current_operator() -> Operator | None:
    """The signed-in account of this request, or None."""
    operator = current_user._get_current_object()  # type: ignore[attr-defined]
    return operator if isinstance(operator, Operator) else None


def sign_in(user: User) -> Operator:
    """Start a new session for `user` (whatever the session held before is dropped)."""
    session.clear()
    session[SESSION_ID] = secrets.token_urlsafe(16)
    session[SESSION_BEGAN] = time.time()
    session.permanent = True
    operator = Operator(user, session[SESSION_ID], session[SESSION_BEGAN], session_lifetime())
    login_user(operator)
    return operator


def sign_out() -> None:
    """End this session here and everywhere: its id is revoked until it would have expired,
    which also ends its live dashboard connection."""
    operator = current_operator()
    if operator is not None:
        revocation.revoke_token(services().redis, {"jti": operator.session_id,
                                                   "exp": operator.expires})
    logout_user()
    session.clear()


# --- pages and actions ----------------------------------------------------------------------------

class ActionForm(SecureForm):
    """The CSRF token every form and action of the dashboard carries (Flask-Admin's
    SecureForm: a token bound to the session, signed with the app's secret key)."""


def forbidden(message: str = "Your account may not do this.") -> Response:
    return Response(render_template("operator/denied.html", message=message), status=403)


def csrf_refused() -> Response:
    return Response(render_template(
        "operator/denied.html", title="Form expired",
        message="This form expired or did not come from this dashboard (its CSRF token is "
                "missing or wrong). Reload the page and try again."), status=400)


def login_url() -> str:
    return url_for("operator_login.login", next=request.full_path.rstrip("?"))


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path of the dashboard, never another site."""
    default = url_for("admin.index")
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/admin") or \
            target.startswith("//") or "\\" in target:
        return default
    return target


class OperatorAccess:
    """Mixin for every Flask-Admin view: viewers and admins only; anonymous visitors are sent
    to the login page, other signed-in accounts get 403."""

    def is_accessible(self) -> bool:
        operator = current_operator()
        return operator is not None and operator.is_operator

    def inaccessible_callback(self, name: str, **kwargs: Any) -> Response:
        if current_operator() is None:
            return redirect(login_url())  # type: ignore[return-value]
        return forbidden("The operator dashboard is for viewers and admins.")


def guard_action(action: str, target: str) -> Response | None:
    """Check an action before it runs: None when the current operator may run it (an admin,
    with a valid CSRF token), else the refusal to send. A viewer's genuine attempt (valid
    token) is written to the audit log as denied."""
    operator = current_operator()
    token_ok = ActionForm(request.form).validate()
    if operator is None or not operator.is_admin:
        if operator is not None and token_ok:
            audit.record(action, target, audit.DENIED, "needs the admin role")
        return forbidden("Only admins may change anything; your role is "
                         f"{operator.user.role if operator else 'none'}.")
    if not token_ok:
        return csrf_refused()
    return None
