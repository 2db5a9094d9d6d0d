"""The Queues view: every registered user stream, with its length, pending entries, oldest
entry, the engine holding its lease, its live connections and whether it is paused.

Users come from the queue registry (one SMEMBERS), never from SCAN. Sorted by name, a page
costs the registry plus one pipelined round trip for its 100 queues; sorted by backlog, one
XLEN per registered stream more, in the same kind of round trip (engine.control.by_backlog).
Actions (admins): write now (every engine sweeps at once), pause, resume, and purge after a
confirmation (the entries go to dead letters, "purged by <admin>").
"""

from __future__ import annotations

import math
import time
from typing import Any

from flask import Response, flash, request
from flask_admin import expose

from engine import control, streams
from engine.keys import USER_ID_PATTERN
from engine.storage import open_storage
from webapp.admin import audit
from webapp.admin.access import current_operator, guard_action
from webapp.admin.base import PAGE_SIZE, OperatorView
from webapp.extensions import services

SORTS = ("backlog", "name")
ACTIONS = ("pause", "resume", "purge", "write-now")


def page_of_queues(sort: str, page: int, search: str = "") -> tuple[list[Any], int, int]:
    """(queue states of the page, page number, pages) for the registered users."""
    redis = services().redis
    users = streams.registered_users(redis)
    if search:
        users = [user for user in users if search in user]
    if sort == "backlog":
        users = [user for user, _ in control.by_backlog(redis, users)]
    pages = max(1, math.ceil(len(users) / PAGE_SIZE))
    page = min(max(1, page), pages)
    chosen = users[(page - 1) * PAGE_SIZE:page * PAGE_SIZE]
    states = control.queue_states(redis, chosen, streams.live_web_instances(redis))
    return states, page, pages


class QueuesView(OperatorView):
    @expose("/")
    def index(self) -> str:
        sort = request.args.get("sort", "backlog")
        sort = sort if sort in SORTS else "backlog"
        search = request.args.get("q", "").strip()
        page = request.args.get("page", "1")
        states, number, pages = page_of_queues(
            sort, int(page) if page.isdigit() else 1, search)
        return self.render("operator/queues.html", states=states, sort=sort, page=number,
                           pages=pages, search=search, now_ms=int(time.time() * 1000))

    @expose("/purge")
    def confirm_purge(self) -> str | Response:
        user = request.args.get("user", "")
        if not USER_ID_PATTERN.fullmatch(user):
            flash("No such queue.", "error")
            return self.back(self.get_url(".index"))
        redis = services().redis
        [state] = control.queue_states(redis, [user], streams.live_web_instances(redis))
        return self.render("operator/purge.html", state=state)

    @expose("/action", methods=["POST"])
    def action(self) -> Response:
        action, user = request.form.get("action", ""), request.form.get("user", "")
        target = "all engines" if action == "write-now" else f"queue:{user}"
        refused = guard_action(action if action in ACTIONS else "queue-action", target)
        if refused is not None:
            return refused
        if action not in ACTIONS or (action != "write-now" and
                                     not USER_ID_PATTERN.fullmatch(user)):
            flash("Unknown action or queue.", "error")
            return self.back(self.get_url(".index"))
        operator = current_operator()
        assert operator is not None  # guard_action admitted an admin
        redis = services().redis
        with audit.audited(action, target) as entry:
            if action == "write-now":
                heard = control.request_sweep(redis)
                entry.detail = f"{heard} engine(s) heard it"
                flash(f"Write now: {heard} engine(s) asked to sweep.", "success")
            elif action == "pause":
                if control.pause(redis, user, operator.username):
                    flash(f"{user}'s queue is paused: its messages are accepted and held "
                          "back.", "success")
                else:
                    entry.detail = "was paused already"
                    flash(f"{user}'s queue was paused already.", "info")
            elif action == "resume":
                if control.resume(redis, user):
                    flash(f"{user}'s queue is resumed.", "success")
                else:
                    entry.detail = "was not paused"
                    flash(f"{user}'s queue was not paused.", "info")
            else:
                return self._purge(user, operator.username, entry)
        return self.back(self.get_url(".index"))

    def _purge(self, user: str, by: str, entry: audit.Entry) -> Response:
        if request.form.get("confirm") != user:
            entry.outcome, entry.detail = audit.FAILED, "not confirmed"
            flash("Purge not done: type the queue's user name to confirm.", "error")
            return self.back(self.get_url(".index"))
        storage = open_storage(services().settings.DATABASE_URL)
        try:
            moved = control.purge(services().redis, storage, user, by)
        except control.QueueBusy as exc:
            entry.outcome, entry.detail = audit.FAILED, str(exc)
            flash(f"Purge not done: {exc}", "error")
            return self.back(self.get_url(".index"))
        finally:
            storage.close()
        entry.detail = f"{moved} entries moved to dead letters"
        flash(f"{user}'s queue purged: {moved} entries moved to dead letters.", "success")
        return self.back(self.get_url(".index"))
