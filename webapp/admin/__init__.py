"""The operator dashboard: Flask-Admin at /admin (Bootstrap 4 theme, every asset served from
this app), for viewers and admins.

Pages: Overview (live figures and charts), Queues, Processes (engines and web processes),
Messages, Users, Dead letters, Audit log. Signing in (`/admin/login`) starts a cookie session:
HttpOnly, SameSite=Lax, Secure outside development, signed with a key derived from
JWT_SECRET_KEY. Every form and action carries a CSRF token (Flask-Admin's SecureForm), every
action is checked for the admin role on the server and written to the audit log. Pages are
served with a Content-Security-Policy that allows scripts from this origin only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

from flask import Flask, Response, request
from flask_admin import Admin
from flask_admin.theme import Bootstrap4Theme

from engine.settings import Settings
from webapp.admin import access, login
from webapp.admin.auditlog import AuditLogView
from webapp.admin.deadletters import DeadLettersView
from webapp.admin.live import Sampler
from webapp.admin.messages import MessagesView
from webapp.admin.overview import OverviewView
from webapp.admin.processes import ProcessesView
from webapp.admin.queues import QueuesView
from webapp.admin.users import UsersView

#: Operator pages load scripts, styles and connections from their own origin only.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' "
                           "'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
                           "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def session_key(settings: Settings) -> str:
    """The key that signs session cookies: derived from JWT_SECRET_KEY, so that every web
    process has the same without another secret to configure, yet distinct from it."""
    return hmac.new(settings.jwt_secret().encode(), b"tributary operator sessions",
                    hashlib.sha256).hexdigest()


def init_app(app: Flask, settings: Settings) -> None:
    app.config.update(
        SECRET_KEY=session_key(settings),
        SESSION_COOKIE_NAME="tributary_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=not settings.development,
        PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=settings.ADMIN_SESSION_HOURS),
        # Only a request that changed the session sets the cookie again.
        SESSION_REFRESH_EACH_REQUEST=False,
    )
    access.login_manager.init_app(app)
    app.register_blueprint(login.bp)
    admin = Admin(app, name="Tributary", url="/admin",
                  theme=Bootstrap4Theme(swatch="default", fluid=True),
                  index_view=OverviewView(name="Overview", url="/admin",
                                          endpoint="admin"))
    admin.add_view(QueuesView(name="Queues", endpoint="queues", url="/admin/queues"))
    admin.add_view(ProcessesView(name="Processes", endpoint="processes",
                                 url="/admin/processes"))
    admin.add_view(MessagesView(name="Messages", endpoint="messages", url="/admin/messages"))
    admin.add_view(UsersView(name="Users", endpoint="users", url="/admin/users"))
    admin.add_view(DeadLettersView(name="Dead letters", endpoint="dead_letters",
                                   url="/admin/dead-letters"))
    admin.add_view(AuditLogView(name="Audit log", endpoint="audit_log", url="/admin/audit"))

    @app.after_request
    def protect_operator_pages(response: Response) -> Response:
        if request.path.startswith("/admin"):
            response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
            response.headers["X-Content-Type-Options"] = "nosniff"
            response.headers["Referrer-Policy"] = "same-origin"
            if not request.path.startswith("/admin/static/"):
                response.headers["Cache-Control"] = "no-store"
        return response


def sampler(app: Flask) -> Sampler:
    """The dashboard sampler of this web process (started by `python -m webapp`)."""
    services = app.extensions["tributary"]
    found = app.extensions.get("tributary_sampler")
    if found is None:
        found = Sampler(services.settings, services.redis, services.db,
                        services.gateway.instance)
        app.extensions["tributary_sampler"] = found
    return found  # type: ignore[no-any-return]
