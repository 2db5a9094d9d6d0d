"""The Dead letters view: the entries the database refused (or an admin purged), with their
payload, error, attempts and time, newest first in keyset pages; filtered by user and by
whether they were replayed. Actions (admins), on one or many: replay (appended to the user's
stream again, as `python -m engine replay-dead-letters` does) and delete."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Response, flash, request
from flask_admin import expose

from engine.deadletters import replay
from engine.keys import USER_ID_PATTERN
from engine.schema import dead_letters
from webapp.admin import audit
from webapp.admin.access import guard_action
from webapp.admin.base import PAGE_SIZE, OperatorView
from webapp.extensions import services

STATES = ("waiting", "replayed", "all")
ACTIONS = ("replay", "delete")
#: Most dead letters one action takes.
MAX_SELECTED = 1000


def page_of_letters(user: str, state: str, before: int | None) -> tuple[list[Any], int | None]:
    query = sa.select(dead_letters).order_by(dead_letters.c.id.desc()).limit(PAGE_SIZE + 1)
    if user:
        query = query.where(dead_letters.c.user_id == user)
    if state == "waiting":
        query = query.where(dead_letters.c.replayed_at.is_(None))
    elif state == "replayed":
        query = query.where(dead_letters.c.replayed_at.is_not(None))
    if before is not None:
        query = query.where(dead_letters.c.id < before)
    with services().db.connect() as conn:
        rows = list(conn.execute(query).all())
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    return rows, rows[-1].id if more else None


def selected_ids() -> list[int] | None:
    """The dead letter ids the form names, or None when one is not an id."""
    raw = request.form.getlist("id")
    if not raw or len(raw) > MAX_SELECTED or not all(item.isdigit() for item in raw):
        return None
    return sorted({int(item) for item in raw})


class DeadLettersView(OperatorView):
    @expose("/")
    def index(self) -> str:
        user = request.args.get("user", "").strip()
        if user and not USER_ID_PATTERN.fullmatch(user):
            flash("No user has that name.", "error")
            user = ""
        state = request.args.get("state", "waiting")
        state = state if state in STATES else "waiting"
        before = request.args.get("before", "")
        rows, next_before = page_of_letters(user, state,
                                            int(before) if before.isdigit() else None)
        return self.render("operator/dead_letters.html", rows=rows, user=user, state=state,
                           states=STATES, next_before=next_before, before=before)

    @expose("/action", methods=["POST"])
    def action(self) -> Response:
        action = request.form.get("action", "")
        ids = selected_ids()
        target = "dead_letters:" + (",".join(map(str, ids)) if ids else "?")
        refused = guard_action(action if action in ACTIONS else "dead-letter-action", target)
        if refused is not None:
            return refused
        if action not in ACTIONS or ids is None:
            flash(f"Choose replay or delete, and 1 to {MAX_SELECTED} dead letters.", "error")
            return self.back(self.get_url(".index"))
        with audit.audited(action, target) as entry:
            if action == "replay":
                done = replay(services().settings, services().db, services().redis, ids=ids)
                entry.detail = f"{done} of {len(ids)} replayed"
                flash(f"Replayed {done} of {len(ids)} dead letter(s) into their queues"
                      + ("" if done == len(ids) else
                         " (the others were replayed before, or are not Tributary messages)"),
                      "success" if done else "info")
            else:
                with services().db.begin() as conn:
                    done = conn.execute(dead_letters.delete()
                                        .where(dead_letters.c.id.in_(ids))).rowcount
                entry.detail = f"{done} of {len(ids)} deleted"
                flash(f"Deleted {done} dead letter(s).", "success")
        return self.back(self.get_url(".index"))
