"""The Audit log view: every operator action, newest first in keyset pages, filtered by
actor, action or target. Read-only: nothing in the dashboard edits or deletes a row."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import request
from flask_admin import expose

from engine.schema import audit_log
from webapp.admin.base import PAGE_SIZE, OperatorView
from webapp.extensions import services


def page_of_entries(actor: str, action: str, target: str,
                    before: int | None) -> tuple[list[Any], int | None]:
    query = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(PAGE_SIZE + 1)
    if actor:
        query = query.where(audit_log.c.actor == actor)
    if action:
        query = query.where(audit_log.c.action == action)
    if target:
        query = query.where(audit_log.c.target == target)
    if before is not None:
        query = query.where(audit_log.c.id < before)
    with services().db.connect() as conn:
        rows = list(conn.execute(query).all())
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    return rows, rows[-1].id if more else None


class AuditLogView(OperatorView):
    @expose("/")
    def index(self) -> str:
        actor = request.args.get("actor", "").strip()
        action = request.args.get("action", "").strip()
        target = request.args.get("target", "").strip()
        before = request.args.get("before", "")
        rows, next_before = page_of_entries(actor, action, target,
                                            int(before) if before.isdigit() else None)
        return self.render("operator/audit_log.html", rows=rows, actor=actor, action=action,
                           target=target, next_before=next_before, before=before)
