"""The Users view: list and search accounts (keyset pages by username), create one (its
password hashed as at registration), disable or enable it, set its role, revoke all its
tokens. Disabling and revoking end the account's live connections at once, on every web
process (webapp/revocation.py), and its dashboard sessions with them."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Response, flash, request
from flask_admin import expose
from wtforms import PasswordField, SelectField, StringField

from engine.errors import UsernameTaken, ValidationError
from engine.schema import users
from webapp.admin import audit
from webapp.admin.access import ActionForm, current_operator, guard_action
from webapp.admin.base import PAGE_SIZE, OperatorView
from webapp.extensions import services
from webapp.revocation import ACCOUNT_DISABLED, TOKEN_REVOKED, revoke_user
from webapp.users import ROLES, create_user, find_user, set_disabled, set_role

ACTIONS = ("disable", "enable", "set-role", "revoke-tokens")


class CreateUserForm(ActionForm):
    username = StringField("Username")
    password = PasswordField("Password")
    role = SelectField("Role", choices=[(role, role) for role in ROLES], default="user")


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def page_of_users(search: str, after: str | None) -> tuple[list[Any], str | None]:
    """Up to PAGE_SIZE accounts whose name starts with `search`, by name, after `after`;
    and the name to continue after, when there are more."""
    query = sa.select(users.c.id, users.c.username, users.c.role, users.c.disabled,
                      users.c.created_at).order_by(users.c.username).limit(PAGE_SIZE + 1)
    if search:
        query = query.where(users.c.username.like(_escape_like(search) + "%", escape="\\"))
    if after:
        query = query.where(users.c.username > after)
    with services().db.connect() as conn:
        rows = list(conn.execute(query).all())
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    return rows, rows[-1].username if more else None


def _revoke(username: str, reason: str) -> None:
    settings = services().settings
    revoke_user(services().redis, username, reason,
                keep_seconds=max(settings.JWT_REFRESH_TOKEN_DAYS * 86400,
                                 settings.ADMIN_SESSION_HOURS * 3600))


class UsersView(OperatorView):
    @expose("/")
    def index(self) -> str:
        search = request.args.get("q", "").strip()
        after = request.args.get("after") or None
        rows, next_after = page_of_users(search, after)
        return self.render("operator/users.html", rows=rows, search=search,
                           next_after=next_after, after=after, roles=ROLES,
                           create_form=CreateUserForm())

    @expose("/create", methods=["POST"])
    def create(self) -> Response:
        form = CreateUserForm(request.form)
        username = form.username.data or ""
        refused = guard_action("create-user", f"user:{username}")
        if refused is not None:
            return refused
        with audit.audited("create-user", f"user:{username}") as entry:
            entry.detail = f"role {form.role.data}"
            try:
                create_user(services().db, username, form.password.data or "",
                            role=form.role.data or "user")
            except (ValidationError, UsernameTaken) as exc:
                entry.outcome = audit.FAILED
                entry.detail = "username: already taken" if isinstance(exc, UsernameTaken) \
                    else str(exc)
                flash(f"Not created: {entry.detail}.", "error")
                return self.back(self.get_url(".index"))
        flash(f"Created {username} ({form.role.data}).", "success")
        return self.back(self.get_url(".index"))

    @expose("/action", methods=["POST"])
    def action(self) -> Response:
        action, username = request.form.get("action", ""), request.form.get("user", "")
        target = f"user:{username}"
        refused = guard_action(action if action in ACTIONS else "user-action", target)
        if refused is not None:
            return refused
        user = find_user(services().db, username) if action in ACTIONS else None
        if user is None:
            flash("Unknown action or user.", "error")
            return self.back(self.get_url(".index"))
        operator = current_operator()
        assert operator is not None  # guard_action admitted an admin
        db = services().db
        with audit.audited(action, target) as entry:
            if action == "disable":
                if user.username == operator.username:
                    entry.outcome, entry.detail = audit.FAILED, "cannot disable oneself"
                    flash("You cannot disable your own account.", "error")
                    return self.back(self.get_url(".index"))
                set_disabled(db, user.username, True, redis=services().redis)
                _revoke(user.username, ACCOUNT_DISABLED)
                flash(f"{user.username} is disabled; its connections were ended.", "success")
            elif action == "enable":
                set_disabled(db, user.username, False, redis=services().redis)
                flash(f"{user.username} is enabled (its old tokens stay revoked).", "success")
            elif action == "revoke-tokens":
                _revoke(user.username, TOKEN_REVOKED)
                flash(f"Every token of {user.username} issued until now is revoked.",
                      "success")
            else:
                role = request.form.get("role", "")
                if role not in ROLES or (user.username == operator.username and
                                         role != "admin"):
                    entry.outcome = audit.FAILED
                    entry.detail = f"refused role {role!r}"
                    flash("Not changed: choose a role (and you cannot demote yourself).",
                          "error")
                    return self.back(self.get_url(".index"))
                set_role(db, user.username, role, redis=services().redis)
                entry.detail = f"{user.role} -> {role}"
                flash(f"{user.username} is now a {role}.", "success")
        return self.back(self.get_url(".index"))
