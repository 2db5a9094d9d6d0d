"""The Queues view: every registered user stream, with its length, pending entries, oldest
entry, the engine holding its lease, its live connections and whether it is paused.

Users come from the queue registry, never from SCAN. Sorted by name, a page costs the
registry (SMEMBERS) plus one pipelined round trip for its 100 queues. Sorted by backlog, it
pages through the ranking the engines record after every sweep (a sorted set: one ZREVRANGE
for the page, whatever the number of queues); the order is then as of the last sweep (at
most SWEEP_INTERVAL old), while the figures shown are read now. With no engine running (no
ranking), or with a search, the backlog is measured live instead (engine.control.by_backlog,
one XLEN per queue).
Actions (admins): write now (every engine sweeps at once), pause, resume, and purge after a
confirmation (the entries go to dead letters, "purged by <admin>").
"""

from __future__ import annotations

import math
import time
from typing import Any

from flask import Response, flash, request
from flask_admin import expose

from engine import control, keys, liveness, streams
from engine.keys import USER_ID_PATTERN
from engine.storage import open_storage
from webapp.admin import audit
from webapp.admin.access import current_operator, guard_action
from webapp.admin.base import PAGE_SIZE, OperatorView
from webapp.extensions import services

SORTS = ("backlog", "name")
ACTIONS = ("pause", "resume", "purge", "write-now")


def page_of_queues(sort: str, page: int, search: str = ""
                   ) -> tuple[list[control.QueueState], int, int, bool]:
    """(queue states of the page, page number, pages, whether the order is the engines'
    ranking) for the registered users."""
    redis = services().redis
    if sort == "backlog" and not search:
        chosen = _ranked_page(redis, page)
        if chosen is not None:
            users, page, pages = chosen
            return _states(redis, users), page, pages, True
    users = streams.registered_users(redis)
    if search:
        users = [user for user in users if search in user]
    if sort == "backlog":
        users = [user for user, _ in control.by_backlog(redis, users)]
    pages = max(1, math.ceil(len(users) / PAGE_SIZE))
    page = min(max(1, page), pages)
    return _states(redis, users[(page - 1) * PAGE_SIZE:page * PAGE_SIZE]), page, pages, False


def _ranked_page(redis: Any, page: int) -> tuple[list[str], int, int] | None:
    """A page of the engines' backlog ranking (None when no engine recorded one lately).
    Queues registered since the last sweep follow the ranked ones, by name."""
    registered = streams.registry_size(redis)
    found = control.ranked(redis, (max(1, page) - 1) * PAGE_SIZE, PAGE_SIZE)
    if found is None:
        return None
    users, ranked_total = [user for user, _ in found[0]], found[1]
    pages = max(1, math.ceil(max(registered, ranked_total) / PAGE_SIZE))
    if page > pages or page < 1:
        return _ranked_page(redis, min(max(1, page), pages))
    if len(users) < PAGE_SIZE and registered > ranked_total:
        ranked_all = set(redis.zrange(keys.BACKLOG_RANKING, 0, -1))
        newer = sorted(set(streams.registered_users(redis)) - ranked_all)
        skip = max(0, (page - 1) * PAGE_SIZE - ranked_total)
        users += newer[skip:skip + PAGE_SIZE - len(users)]
    return users, page, pages


def _states(redis: Any, users: list[str]) -> list[control.QueueState]:
    return control.queue_states(redis, users, liveness.live_names(redis, liveness.WEB))


class QueuesView(OperatorView):
    @expose("/")
    def index(self) -> str:
        sort = request.args.get("sort", "backlog")
        sort = sort if sort in SORTS else "backlog"
        search = request.args.get("q", "").strip()
        page = request.args.get("page", "1")
        states, number, pages, ranked = page_of_queues(
            sort, int(page) if page.isdigit() else 1, search)
        return self.render("operator/queues.html", states=states, sort=sort, page=number,
                           pages=pages, search=search, ranked=ranked,
                           now_ms=int(time.time() * 1000))

    @expose("/purge")
    def confirm_purge(self) -> str | Response:
        user = request.args.get("user", "")
        if not USER_ID_PATTERN.fullmatch(user):
            flash("No such queue.", "error")
            return self.back(self.get_url(".index"))
        redis = services().redis
        [state] = control.queue_states(redis, [user], liveness.live_names(redis, liveness.WEB))
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
