"""The Processes view: engines and web processes, alive or not, with what each last reported;
a process no longer alive stays listed, marked, until an admin forgets it."""

from __future__ import annotations

from flask import Response, flash, request
from flask_admin import expose

from engine import liveness
from webapp.admin import audit
from webapp.admin.access import guard_action
from webapp.admin.base import OperatorView
from webapp.extensions import services


class ProcessesView(OperatorView):
    @expose("/")
    def index(self) -> str:
        redis = services().redis
        return self.render("operator/processes.html",
                           engines=liveness.records(redis, liveness.ENGINE),
                           webs=liveness.records(redis, liveness.WEB))

    @expose("/forget", methods=["POST"])
    def forget(self) -> Response:
        kind, name = request.form.get("kind", ""), request.form.get("name", "")
        refused = guard_action("forget", f"{kind}:{name}")
        if refused is not None:
            return refused
        if kind not in liveness.KINDS or not name:
            flash("Unknown process.", "error")
            return self.back(self.get_url(".index"))
        with audit.audited("forget", f"{kind}:{name}") as entry:
            if liveness.forget(services().redis, liveness.KINDS[kind], name):
                flash(f"Forgot {kind} {name}.", "success")
            else:
                entry.outcome, entry.detail = audit.FAILED, "alive or unknown"
                flash(f"{name} is alive (or unknown): not forgotten.", "error")
        return self.back(self.get_url(".index"))
